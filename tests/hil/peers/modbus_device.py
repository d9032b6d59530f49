#!/usr/bin/env python3
"""A Modbus device for the hardware-in-the-loop tests, built on pymodbus (SimDevice/SimData).

It serves Modbus TCP or Modbus RTU on a serial port (for example one end of a socat pty
pair), with known register values, so that a test can check what smartpark reads and
writes. It is a test peer, not a simulator of any real product: see device-sim for that.

Usage:
    modbus_device.py --tcp 127.0.0.1:0 [--unit 1]
    modbus_device.py --rtu /tmp/x/a --baud 19200 --unit 1 --unit 2 [--silent-unit 3]
    modbus_device.py --tcp 127.0.0.1:15020 --registers map.json
    modbus_device.py --rtu /tmp/x/a --wire-speed --unit-registers 1=u1.json \
        --unit-registers 2=u2.json --late-unit 2 --late-ms 302:360 --late-probability 0.5

Once it accepts requests it prints one line, `READY <port>` for TCP (the bound port, useful
with port 0) or `READY <path>` for RTU, and flushes stdout. SIGTERM or SIGINT stop it
cleanly (exit 0). Tests may SIGSTOP/SIGCONT it to make it go silent for a while, and
SIGUSR1 it to make its late units answer in time from then on (a second SIGUSR1 makes them
late again).

Options:
    --unit N         Unit (slave) id to answer as; repeat for several devices on one line.
                     Default 1. Every unit gets its own copy of the register map. Requests for
                     other ids get exception 4 (pymodbus's behaviour for an unknown id).
    --silent-unit N  A unit id that never answers, like a dead slave on a bus: requests to
                     it take no effect and its responses are dropped before they reach the
                     wire. Repeatable; works over TCP as well.
    --registers F    A JSON register map replacing the default one (format below).
    --unit-registers N=F  Unit N serves the JSON register map in F instead (and answers, as
                     with --unit). Repeatable; gives each unit values of its own.
    --baud, --parity N|E|O, --stopbits 1|2   Serial settings for --rtu (19200 8N1 default).
    --wire-speed     RTU only: send every reply byte by byte at the line's speed (one start
                     bit, eight data bits, the parity bit if any and the stop bits per byte:
                     0.52 ms a byte at 19200 8N1), as a real device on a real line does, instead
                     of all at once; replies never overlap on the wire. pymodbus computes the
                     replies; this script only paces them, on a second descriptor of the port.
    --turnaround-ms T  With --wire-speed: every unit starts its reply T ms after pymodbus has
                     it (default 0), like a device's processing time.
    --late-unit N    With --wire-speed: unit N answers late, after --late-ms instead of the
                     turnaround; meant to exceed the master's timeout. Repeatable.
    --late-ms LO:HI  The late delay, drawn uniformly from LO to HI ms. Default 350:400.
    --late-probability P  A request to a late unit is answered late with probability P
                     (default 1: always); the others get the turnaround, so that the unit
                     keeps coming back. Draws are seeded: the same run of delays every time.
                     Every late reply is announced on stdout when its first byte is sent:
                     `LATE <unit> <delay ms>`.
    --verbose        pymodbus debug logging on stderr.

Default register map (all multi-register values big-endian, high word first; addresses are
0-based PDU addresses):

    input registers (function 04, read-only)
        0-1    float32   230.5
        2-3    uint32    seconds counter: 0 at start, +1 every second
        4      int16     -1234
        5      uint16    50000
        6-7    int32     -100000
        8-9    float32   -40.25
        10-19  not mapped: any read touching them gets exception 2 (IllegalDataAddress)
        20-23  float64   1234.5678
        24-    not mapped (exception 2)
    holding registers (functions 03, 06, 16, read/write)
        0-9    uint16    100 + address (100, 101, ... 109), writable
        10-19  not mapped (exception 2)
        20-21  float32   21.5, writable
        22-    not mapped (exception 2)
    coils (functions 01, 05, 15, read/write)
        0-15   on at even addresses, off at odd ones; 16- not mapped (exception 2)
    discrete inputs (function 02, read-only)
        0-15   on where address % 3 == 0; 16- not mapped (exception 2)

Register map JSON: an object with up to four lists, "input", "holding", "coils" and
"discrete". A register entry is {"address": A, "type": T, "value": V} or {..., "values":
[V, ...]} with T one of uint16 int16 uint32 int32 uint64 int64 float32 float64 (or the
profile spellings u16 i16 u32 i32 u64 i64 f32 f64); "counter": true makes an integer entry
count up by one per second from its value (wrapping at its type's end); "readonly": true
makes writes to a holding entry fail with exception 2. A bit entry is {"address": A, "values": [true, false, ...]}. Addresses not covered
are not mapped. pymodbus needs every table to have an entry, so an empty or missing bit table
gets 16 off bits at 65520-65535, and an empty register table one unmapped placeholder.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import os
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass

from pymodbus import FramerType, pymodbus_apply_logging_config
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

DEFAULT_MAP = {
    "input": [
        {"address": 0, "type": "float32", "value": 230.5},
        {"address": 2, "type": "uint32", "value": 0, "counter": True},
        {"address": 4, "type": "int16", "value": -1234},
        {"address": 5, "type": "uint16", "value": 50000},
        {"address": 6, "type": "int32", "value": -100000},
        {"address": 8, "type": "float32", "value": -40.25},
        {"address": 20, "type": "float64", "value": 1234.5678},
    ],
    "holding": [
        {"address": 0, "type": "uint16", "values": [100 + a for a in range(10)]},
        {"address": 20, "type": "float32", "value": 21.5},
    ],
    "coils": [{"address": 0, "values": [a % 2 == 0 for a in range(16)]}],
    "discrete": [{"address": 0, "values": [a % 3 == 0 for a in range(16)]}],
}

TYPES = {
    "uint16": (DataType.UINT16, "H"),
    "int16": (DataType.INT16, "h"),
    "uint32": (DataType.UINT32, "I"),
    "int32": (DataType.INT32, "i"),
    "uint64": (DataType.UINT64, "Q"),
    "int64": (DataType.INT64, "q"),
    "float32": (DataType.FLOAT32, "f"),
    "float64": (DataType.FLOAT64, "d"),
}
TYPES.update({short: TYPES[long] for short, long in [
    ("u16", "uint16"), ("i16", "int16"), ("u32", "uint32"), ("i32", "int32"),
    ("u64", "uint64"), ("i64", "int64"), ("f32", "float32"), ("f64", "float64"),
]})
WIDTH = {"H": 1, "h": 1, "I": 2, "i": 2, "Q": 4, "q": 4}
# Function codes that touch each register table, for the counter hook.
TABLE_OF_FUNCTION = {4: "input", 3: "holding", 6: "holding", 16: "holding", 23: "holding"}


class MapError(ValueError):
    """A register map that cannot be served."""


@dataclass
class Counter:
    table: str
    address: int
    start: int
    width: int  # registers
    signed: bool


def build_tables(spec: dict) -> tuple[tuple[list, list, list, list], list[Counter]]:
    """Turns a register map into pymodbus's four tables and the list of counters."""
    unknown = set(spec) - {"input", "holding", "coils", "discrete"}
    if unknown:
        raise MapError(f"unknown tables {sorted(unknown)}")
    counters: list[Counter] = []
    tables = {}
    for table in ("coils", "discrete"):
        blocks = []
        for entry in spec.get(table, []):
            values = entry.get("values", [entry.get("value", False)])
            if not values or not all(isinstance(v, bool) for v in values):
                raise MapError(f"{table} at {entry.get('address')}: values must be booleans")
            blocks.append(SimData(address=entry["address"], values=values, datatype=DataType.BITS))
        tables[table] = blocks or [SimData(address=65520, values=[False] * 16, datatype=DataType.BITS)]
    for table in ("holding", "input"):
        blocks = []
        for entry in spec.get(table, []):
            address = entry["address"]
            try:
                datatype, fmt = TYPES[entry["type"]]
            except KeyError as exc:
                raise MapError(f"{table} at {address}: unknown type {entry.get('type')!r}") from exc
            values = entry["values"] if "values" in entry else entry.get("value", 0)
            if fmt in "fd":
                values = [float(v) for v in values] if isinstance(values, list) else float(values)
            if entry.get("counter"):
                if fmt not in WIDTH or isinstance(values, list):
                    raise MapError(f"{table} at {address}: a counter is one integer value")
                counters.append(Counter(table, address, values, WIDTH[fmt], fmt.islower()))
            blocks.append(SimData(
                address=address,
                values=values,
                datatype=datatype,
                readonly=bool(entry.get("readonly", False)),
            ))
        tables[table] = blocks or [SimData(address=0, datatype=DataType.INVALID)]
    return (tables["coils"], tables["discrete"], tables["holding"], tables["input"]), counters


def counter_action(counters: list[Counter], started: float):
    """A SimDevice action that refreshes the counters before every access to their table."""

    async def action(function_code, start_address, _address, _count, registers, _set_values):
        table = TABLE_OF_FUNCTION.get(function_code)
        elapsed = int(time.monotonic() - started)
        for c in counters:
            if c.table != table:
                continue
            bits = 16 * c.width
            value = (c.start + elapsed) % (1 << bits)
            if c.signed and value >= 1 << (bits - 1):
                value -= 1 << bits
            raw = value & ((1 << bits) - 1)
            offset = c.address - start_address
            for i in range(c.width):
                registers[offset + i] = (raw >> (16 * (c.width - 1 - i))) & 0xFFFF
        return None

    return action


async def refuse(*_args) -> ExcCodes:
    """The action of a silent unit: nothing it is sent takes effect (its answer is dropped)."""
    return ExcCodes.DEVICE_FAILURE


def silencer(silent_units: set[int], framer: FramerType):
    """A trace_packet hook that drops every response from a silent unit."""
    unit_at = 6 if framer == FramerType.SOCKET else 0

    def trace_packet(sending: bool, data: bytes) -> bytes:
        if sending and len(data) > unit_at and data[unit_at] in silent_units:
            return b""
        return data

    return trace_packet


class WireSpeedLine:
    """Sends RTU replies paced at the line's speed, each after its unit's delay.

    pymodbus hands every reply to `trace_packet` before it writes it; the hook returns
    nothing for pymodbus to write and queues the reply here instead. One thread sends the
    queued replies in the order they fall due, byte by byte, on its own descriptor of the
    serial port; a reply that falls due while another is on the wire waits for it, as a
    device waits for a quiet bus.
    """

    def __init__(self, args: argparse.Namespace, silent: set[int]):
        bits = 1 + 8 + (0 if args.parity == "N" else 1) + args.stopbits
        self.char_time = bits / args.baud
        self.turnaround = args.turnaround_ms / 1000
        self.late_units = set(args.late_unit)
        self.late_range = args.late_ms
        self.late_probability = args.late_probability
        self.late = True
        self.silent = silent
        self.random = random.Random(12)
        self.fd = os.open(args.rtu, os.O_RDWR | os.O_NOCTTY)
        self.queue: list[tuple[float, int, bytes, str | None]] = []
        self.seq = 0
        self.wake = threading.Condition()
        threading.Thread(target=self.send_forever, daemon=True).start()

    def toggle_late(self) -> None:
        self.late = not self.late

    def trace_packet(self, sending: bool, data: bytes) -> bytes:
        if not sending or not data:
            return data
        unit = data[0]
        if unit in self.silent:
            return b""
        delay = self.turnaround
        note = None
        if unit in self.late_units and self.late and self.random.random() < self.late_probability:
            delay = self.random.uniform(*self.late_range) / 1000
            note = f"LATE {unit} {delay * 1000:.1f}"
        with self.wake:
            self.seq += 1
            heapq.heappush(self.queue, (time.monotonic() + delay, self.seq, data, note))
            self.wake.notify()
        return b""

    def send_forever(self) -> None:
        while True:
            with self.wake:
                while not self.queue or self.queue[0][0] > time.monotonic():
                    timeout = self.queue[0][0] - time.monotonic() if self.queue else None
                    self.wake.wait(timeout)
                _, _, data, note = heapq.heappop(self.queue)
            if note:
                print(note, flush=True)
            start = time.monotonic()
            for i, byte in enumerate(data):
                # Absolute deadlines: a late wake-up is caught up, not added to every byte.
                pause = start + i * self.char_time - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                os.write(self.fd, bytes([byte]))
            # The last byte's own time on the wire, before the line is free again.
            time.sleep(self.char_time)


def parse_late_ms(text: str) -> tuple[float, float]:
    lo, _, hi = text.partition(":")
    try:
        lo_ms, hi_ms = float(lo), float(hi or lo)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not LO:HI in ms") from exc
    if not 0 <= lo_ms <= hi_ms:
        raise argparse.ArgumentTypeError(f"{text!r} is not LO:HI with 0 <= LO <= HI")
    return lo_ms, hi_ms


def parse_unit_registers(text: str) -> tuple[int, str]:
    unit, _, path = text.partition("=")
    if not unit.isdigit() or not path:
        raise argparse.ArgumentTypeError(f"{text!r} is not N=FILE")
    return int(unit), path


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--tcp", metavar="HOST:PORT", help="serve Modbus TCP (port 0: any free port)")
    where.add_argument("--rtu", metavar="SERIAL_PATH", help="serve Modbus RTU on a serial device")
    parser.add_argument("--baud", type=int, default=19200)
    parser.add_argument("--parity", choices="NEO", default="N")
    parser.add_argument("--stopbits", type=int, choices=(1, 2), default=1)
    parser.add_argument("--unit", type=int, action="append", metavar="N")
    parser.add_argument("--silent-unit", type=int, action="append", default=[], metavar="N")
    parser.add_argument("--registers", metavar="JSON_FILE")
    parser.add_argument("--unit-registers", type=parse_unit_registers, action="append",
                        default=[], metavar="N=JSON_FILE")
    parser.add_argument("--wire-speed", action="store_true")
    parser.add_argument("--turnaround-ms", type=float, default=0.0)
    parser.add_argument("--late-unit", type=int, action="append", default=[], metavar="N")
    parser.add_argument("--late-ms", type=parse_late_ms, default=(350.0, 400.0), metavar="LO:HI")
    parser.add_argument("--late-probability", type=float, default=1.0, metavar="P")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    mapped = [unit for unit, _ in args.unit_registers]
    args.unit = args.unit or ([] if mapped else [1])
    args.unit += [u for u in mapped if u not in args.unit]
    for unit in args.unit + args.silent_unit + args.late_unit:
        if not 0 < unit < 248:
            parser.error(f"unit {unit} is outside 1..247")
    if (args.late_unit or args.turnaround_ms) and not args.wire_speed:
        parser.error("--late-unit and --turnaround-ms need --wire-speed")
    if args.wire_speed and not args.rtu:
        parser.error("--wire-speed is for --rtu")
    if not 0 <= args.late_probability <= 1:
        parser.error("--late-probability must be between 0 and 1")
    if args.tcp:
        host, _, port = args.tcp.rpartition(":")
        if not host or not port.isdigit() or int(port) > 65535:
            parser.error(f"--tcp {args.tcp!r} is not HOST:PORT")
        args.host, args.port = host.strip("[]"), int(port)
    return args


async def serve(args: argparse.Namespace) -> int:
    try:
        started = time.monotonic()

        def load(path: str | None):
            spec = DEFAULT_MAP
            if path:
                with open(path, encoding="utf-8") as f:
                    spec = json.load(f)
            tables, counters = build_tables(spec)
            return tables, counter_action(counters, started) if counters else None

        default = load(args.registers)
        own = {unit: load(path) for unit, path in args.unit_registers}
        silent = set(args.silent_unit)
        devices = []
        for u in sorted(set(args.unit) | silent):
            tables, action = own.get(u, default)
            devices.append(SimDevice(id=u, simdata=tables, action=refuse if u in silent else action))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"modbus_device: bad register map: {exc}", file=sys.stderr)
        return 2

    framer = FramerType.SOCKET if args.tcp else FramerType.RTU
    wire = None
    if args.wire_speed:
        try:
            wire = WireSpeedLine(args, silent)
        except OSError as exc:
            print(f"modbus_device: cannot open {args.rtu}: {exc}", file=sys.stderr)
            return 1
        trace = wire.trace_packet
    else:
        trace = silencer(silent, framer) if silent else None
    if args.tcp:
        server = ModbusTcpServer(devices, address=(args.host, args.port), trace_packet=trace)
    else:
        server = ModbusSerialServer(
            devices,
            framer=FramerType.RTU,
            port=args.rtu,
            baudrate=args.baud,
            parity=args.parity,
            stopbits=args.stopbits,
            bytesize=8,
            trace_packet=trace,
        )
    try:
        await server.serve_forever(background=True)
    except RuntimeError as exc:
        print(f"modbus_device: cannot listen on {args.tcp or args.rtu}: {exc}", file=sys.stderr)
        return 1

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if wire:
        loop.add_signal_handler(signal.SIGUSR1, wire.toggle_late)
    where = server.transport.sockets[0].getsockname()[1] if args.tcp else args.rtu
    print(f"READY {where}", flush=True)
    await stop.wait()
    await server.shutdown()
    return 0


def main() -> int:
    args = parse_args(sys.argv[1:])
    if args.verbose:
        pymodbus_apply_logging_config("DEBUG")
    return asyncio.run(serve(args))


if __name__ == "__main__":
    sys.exit(main())
