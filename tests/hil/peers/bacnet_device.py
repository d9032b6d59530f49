#!/usr/bin/env python3
"""A BACnet/IP device for the tests, built on bacpypes3.

It serves one BACnet device on a loopback address with a known set of objects, so that a
test can check what smartpark discovers, reads, writes and is told by COV. It is a test
peer, not a simulator of any real product: see device-sim for that.

Usage:
    bacnet_device.py --address 127.0.0.2 [--port 47808] [--instance 1001] [--points N]
                     [--tick SECONDS] [--no-cov analog-input,2] [--name NAME] [--window N]
                     [--bbmd]

Once it answers requests it prints one line, `READY <instance>`, and flushes stdout. Each
WriteProperty it accepts is then printed as `WROTE <object> <property> priority <p>` (for
example `WROTE analog-value,1 present-value priority 8`; `priority none` when the request
named none), so that a test can check the priority a write went at.
SIGTERM or SIGINT stop it (exit 0). Tests may SIGKILL it and start it again to make the
device go away and come back.

Every BACnet node wants UDP port 47808 and the subnet's broadcast address: give each device
its own loopback address (all of 127/8 routes to `lo`, so 127.0.0.2, 127.0.0.3, ... work)
and give the client another port. The device listens on ADDRESS/8:PORT, so broadcasts to
127.255.255.255:PORT reach it.

Objects (present values at start):

    device,INSTANCE          object-name NAME, vendor "smartpark tests", model "bacnet_device.py"
    analog-input,1           "zone-temp"        21.5 degrees-celsius; moves by +0.5 every tick
                                                (wrapping from 30 back to 18), COV increment 0.1
    analog-input,2           "outside-temp"     8.25 degrees-celsius; refuses COV when named in
                                                --no-cov (the default names it)
    analog-output,1          "valve-cmd"        commandable, relinquish default 0.0 percent
    analog-value,1           "zone-setpoint"    commandable, relinquish default 22.0 degrees-celsius
    analog-value,2           "fault-value"      reliability over-range, status-flags fault set
    binary-input,1           "fan-status"       active; toggles every tick
    binary-output,1          "fan-cmd"          commandable, relinquish default inactive
    binary-value,1           "occupied"         inactive, writable (not commandable)
    multi-state-input,1      "fan-mode"         2 of 3 states; cycles 1, 2, 3 every tick
    multi-state-output,1     "damper-mode"      commandable, relinquish default 1 of 3
    multi-state-value,1      "occupancy-mode"   1 of 4, writable
    analog-input,1000+i      "pt-i"             i * 0.25 (for i in 0..N), the bulk points for
                                                the scan benchmark (--points, default 0)

`--tick 0` (the default) changes nothing, so values stay as listed. A tick that fails stops
the device (exit 2) rather than leaving it silently unchanging.

`--bbmd` makes the device's network port a BBMD with an empty broadcast distribution
table that accepts foreign-device registrations (bacpypes3's BIPBBMD). It then also prints

    FD-REGISTER <address> ttl <ttl> left <seconds|new>   for each Register-Foreign-Device
    FD-EXPIRED <address>                                 when an entry times out of the FDT
    DISTRIBUTE <address>                                 for each Distribute-Broadcast-To-Network

where `left` is how much of the previous registration's TTL was still to run when a renewal
came (bacpypes3 keeps an entry TTL + 5 s, its grace period, counted down once a second), or
`new` when the address was not in the table. The FDT can also be read over the wire with
Read-Foreign-Device-Table.

`--window N` sets the window the device proposes for segmented replies. bacpypes3 proposes
2 and sends the first segment alone, waiting for its acknowledgement; bacnet-client 0.15
acknowledges only a full window, so segmented replies stall unless N is 1.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import bacpypes3.app
from bacpypes3.app import Application
from bacpypes3.basetypes import IPMode
from bacpypes3.ipv4.bvll import DistributeBroadcastToNetwork
from bacpypes3.ipv4.link import BBMDLinkLayer
from bacpypes3.local.analog import (
    AnalogInputObject,
    AnalogOutputObject,
    AnalogValueObject,
    AnalogValueObjectCmd,
)
from bacpypes3.local.binary import (
    BinaryInputObject,
    BinaryOutputObject,
    BinaryValueObject,
)
from bacpypes3.local.device import DeviceObject
from bacpypes3.local.multistate import (
    MultiStateInputObject,
    MultiStateOutputObject,
    MultiStateValueObject,
)
from bacpypes3.local.networkport import NetworkPortObject

# The grace period bacpypes3's BBMD adds to a foreign device's TTL (BIPBBMD.register_foreign_device).
BBMD_GRACE_S = 5


class NoCovAnalogInput(AnalogInputObject):
    """An analog input whose device refuses COV subscriptions (services/cov-subscription-failed)."""

    _cov_criteria = None


class TestDevice(Application):
    """The application, telling stdout about every write it accepted."""

    async def do_WritePropertyRequest(self, apdu):
        await super().do_WritePropertyRequest(apdu)
        priority = "none" if apdu.priority is None else apdu.priority
        print(
            f"WROTE {apdu.objectIdentifier} {apdu.propertyIdentifier} priority {priority}",
            flush=True,
        )


class ReportingBBMD(BBMDLinkLayer):
    """bacpypes3's BBMD link layer, telling stdout about its foreign-device table."""

    def register_foreign_device(self, addr, ttl):
        entry = next((e for e in self.bbmdFDT if e.fdAddress == addr), None)
        left = "new" if entry is None else entry.fdRemain - BBMD_GRACE_S
        print(f"FD-REGISTER {addr} ttl {ttl} left {left}", flush=True)
        return super().register_foreign_device(addr, ttl)

    def fdt_clock(self):
        before = [e.fdAddress for e in self.bbmdFDT]
        super().fdt_clock()
        after = [e.fdAddress for e in self.bbmdFDT]
        for addr in before:
            if addr not in after:
                print(f"FD-EXPIRED {addr}", flush=True)

    async def confirmation(self, lpdu):
        if isinstance(lpdu, DistributeBroadcastToNetwork):
            print(f"DISTRIBUTE {lpdu.pduSource}", flush=True)
        await super().confirmation(lpdu)


def status_ok():
    return [0, 0, 0, 0]


def build(args):
    no_cov = set(args.no_cov)

    def ai(instance, name, value, units="degreesCelsius", cov_increment=0.1):
        cls = (
            NoCovAnalogInput
            if f"analog-input,{instance}" in no_cov
            else AnalogInputObject
        )
        return cls(
            objectIdentifier=("analogInput", instance),
            objectName=name,
            presentValue=value,
            units=units,
            statusFlags=status_ok(),
            eventState="normal",
            outOfService=False,
            covIncrement=cov_increment,
        )

    device = DeviceObject(
        objectIdentifier=("device", args.instance),
        objectName=args.name,
        vendorIdentifier=999,
        vendorName="smartpark tests",
        modelName="bacnet_device.py",
        maxApduLengthAccepted=1476,
        segmentationSupported="segmentedBoth",
        maxSegmentsAccepted=64,
    )
    port = NetworkPortObject(
        f"{args.address}/8:{args.port}",
        objectIdentifier=("network-port", 1),
        objectName="NetworkPort-1",
    )
    if args.bbmd:
        # As Application.from_args does for --bbmd, with an empty BDT: the device is the
        # only BACnet/IP node its broadcasts reach besides registered foreign devices.
        port.bacnetIPMode = IPMode.bbmd
        port.bbmdAcceptFDRegistrations = True
        port.bbmdForeignDeviceTable = []
        port.bbmdBroadcastDistributionTable = []
    objects = [
        device,
        port,
        ai(1, "zone-temp", 21.5),
        ai(2, "outside-temp", 8.25),
        AnalogOutputObject(
            objectIdentifier=("analogOutput", 1),
            objectName="valve-cmd",
            presentValue=0.0,
            relinquishDefault=0.0,
            units="percent",
            statusFlags=status_ok(),
            eventState="normal",
            outOfService=False,
            covIncrement=1.0,
        ),
        AnalogValueObjectCmd(
            objectIdentifier=("analogValue", 1),
            objectName="zone-setpoint",
            presentValue=22.0,
            relinquishDefault=22.0,
            units="degreesCelsius",
            statusFlags=status_ok(),
            eventState="normal",
            outOfService=False,
            covIncrement=0.1,
        ),
        AnalogValueObject(
            objectIdentifier=("analogValue", 2),
            objectName="fault-value",
            presentValue=999.0,
            units="degreesCelsius",
            statusFlags=[0, 1, 0, 0],
            reliability="overRange",
            eventState="normal",
            outOfService=False,
            covIncrement=0.1,
        ),
        BinaryInputObject(
            objectIdentifier=("binaryInput", 1),
            objectName="fan-status",
            presentValue="active",
            polarity="normal",
            statusFlags=status_ok(),
            eventState="normal",
            outOfService=False,
        ),
        BinaryOutputObject(
            objectIdentifier=("binaryOutput", 1),
            objectName="fan-cmd",
            presentValue="inactive",
            relinquishDefault="inactive",
            polarity="normal",
            statusFlags=status_ok(),
            eventState="normal",
            outOfService=False,
        ),
        BinaryValueObject(
            objectIdentifier=("binaryValue", 1),
            objectName="occupied",
            presentValue="inactive",
            statusFlags=status_ok(),
            eventState="normal",
            outOfService=False,
        ),
        MultiStateInputObject(
            objectIdentifier=("multiStateInput", 1),
            objectName="fan-mode",
            presentValue=2,
            numberOfStates=3,
            stateText=["off", "low", "high"],
            statusFlags=status_ok(),
            eventState="normal",
            outOfService=False,
        ),
        MultiStateOutputObject(
            objectIdentifier=("multiStateOutput", 1),
            objectName="damper-mode",
            presentValue=1,
            relinquishDefault=1,
            numberOfStates=3,
            stateText=["closed", "minimum", "open"],
            statusFlags=status_ok(),
            eventState="normal",
            outOfService=False,
        ),
        MultiStateValueObject(
            objectIdentifier=("multiStateValue", 1),
            objectName="occupancy-mode",
            presentValue=1,
            numberOfStates=4,
            stateText=["occupied", "unoccupied", "standby", "holiday"],
            statusFlags=status_ok(),
            eventState="normal",
            outOfService=False,
        ),
    ]
    for i in range(args.points):
        objects.append(ai(1000 + i, f"pt-{i}", i * 0.25, units="noUnits"))
    return objects


async def tick(app, period):
    zone = app.get_object_name("zone-temp")
    fan = app.get_object_name("fan-status")
    mode = app.get_object_name("fan-mode")
    while True:
        await asyncio.sleep(period)
        value = zone.presentValue + 0.5
        zone.presentValue = 18.0 if value > 30.0 else value
        fan.presentValue = "inactive" if fan.presentValue == 1 else "active"
        mode.presentValue = mode.presentValue % 3 + 1


async def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default="127.0.0.2")
    parser.add_argument("--port", type=int, default=47808)
    parser.add_argument("--instance", type=int, default=1001)
    parser.add_argument("--name", default=None)
    parser.add_argument("--points", type=int, default=0)
    parser.add_argument("--tick", type=float, default=0.0)
    parser.add_argument(
        "--window",
        type=int,
        default=None,
        help="proposed window size of segmented responses (bacpypes3's default is 2)",
    )
    parser.add_argument(
        "--no-cov",
        action="append",
        default=None,
        help="an object (type,instance) that refuses COV subscriptions; repeatable",
    )
    parser.add_argument(
        "--bbmd",
        action="store_true",
        help="run the network port as a BBMD (empty BDT) and report its FDT on stdout",
    )
    args = parser.parse_args()
    if args.bbmd:
        # Application.add_object builds the BBMD link layer by this name.
        bacpypes3.app.BBMDLinkLayer_ipv4 = ReportingBBMD
    if args.no_cov is None:
        args.no_cov = ["analog-input,2"]
    if args.name is None:
        args.name = f"test-device-{args.instance}"
    if not 0 <= args.points <= 10000:
        parser.error("--points must be between 0 and 10000")

    app = TestDevice.from_object_list(build(args))
    if args.window is not None:
        app.asap.proposedWindowSize = args.window
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # The link layer binds in tasks of its own; give them a moment before saying READY.
    await asyncio.sleep(0.2)
    ticker = None
    if args.tick > 0:
        ticker = asyncio.create_task(tick(app, args.tick))
        # A tick that fails must not leave a device that silently stopped changing.
        ticker.add_done_callback(
            lambda t: None if t.cancelled() or not t.exception() else sys.exit(2)
        )
    print(f"READY {args.instance}", flush=True)
    await stop.wait()
    if ticker:
        ticker.cancel()
    app.close()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    sys.exit(0)
