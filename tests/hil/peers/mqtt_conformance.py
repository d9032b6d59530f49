"""MQTT 3.1.1 and 5 as field devices speak it, checked against an edge's broker with an
independent client (paho-mqtt).

Usage: mqtt_conformance.py HOST PORT
Environment: DOOR_USER, DOOR_PASSWORD (an account for door d1's reader), LOCK_USER,
LOCK_PASSWORD (another for d1's lock), CARD (a card that opens d1), TELEMETRY (a telemetry
topic anonymous clients may publish: the broker is in lab mode as well as having accounts).

Prints `ok NAME` or `FAIL NAME: why` for each check; exits 1 if any failed.
"""

import os
import queue
import sys
import time
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

HOST, PORT = sys.argv[1], int(sys.argv[2])
ENV = os.environ
TELEMETRY = ENV["TELEMETRY"]
V5, V311 = mqtt.MQTTv5, mqtt.MQTTv311


class Client:
    """A connected client whose events and messages arrive on queues."""

    def __init__(self, cid, proto=V5, user=None, password=None, keepalive=60, clean=True,
                 props=None):
        self.proto = proto
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=proto,
                             clean_session=(clean if proto == V311 else None))
        self.events, self.messages = queue.Queue(), queue.Queue()
        self.c.on_connect = lambda c, u, flags, rc, p: self.events.put(("connack", flags, rc, p))
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.events.put(("suback", rcs))
        self.c.on_publish = lambda c, u, mid, rc, p: self.events.put(("puback", rc))
        self.c.on_disconnect = lambda c, u, flags, rc, p: self.events.put(("disconnect", rc))
        self.c.on_message = lambda c, u, m: self.messages.put(m)
        self.c.reconnect_delay_set(30, 60)
        if user is not None:
            self.c.username_pw_set(user, password)
        kw = {}
        if proto == V5:
            kw = {"clean_start": clean, "properties": props or Properties(PacketTypes.CONNECT)}
        self.c.connect(HOST, PORT, keepalive=keepalive, **kw)
        self.c.loop_start()
        ev = self.wait("connack", "disconnect")
        if ev is None or ev[0] != "connack" or ev[2].is_failure:
            raise AssertionError(f"{cid}: not connected: {ev}")
        self.session_present = ev[1].session_present

    def wait(self, *kinds, timeout=5.0):
        end = time.time() + timeout
        while time.time() < end:
            try:
                ev = self.events.get(timeout=max(0.01, end - time.time()))
            except queue.Empty:
                return None
            if ev[0] in kinds:
                return ev
        return None

    def sub(self, topic, qos=1, options=None):
        if self.proto == V5:
            self.c.subscribe(topic, options=options or SubscribeOptions(qos=qos))
        else:
            self.c.subscribe(topic, qos)
        ev = self.wait("suback")
        assert ev is not None, f"no SUBACK for {topic}"
        return ev[1]

    def pub(self, topic, payload, qos=1, retain=False, props=None):
        self.c.publish(topic, payload, qos=qos, retain=retain, properties=props)
        return self.wait("puback")[1] if qos else None

    def get(self, timeout=3.0):
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self):
        self.c.disconnect()
        self.wait("disconnect", timeout=2)
        self.c.loop_stop()


def publish_props(**kw):
    p = Properties(PacketTypes.PUBLISH)
    for k, v in kw.items():
        setattr(p, k, v)
    return p


def name(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def card_read(read_id):
    return ('{"type":"card","value":"%s","reader":"in","id":"%s"}' % (ENV["CARD"], read_id))


def door(user_key, **kw):
    # The client id is the account's name, as the broker makes it when it has no lab mode.
    return Client(ENV[f"{user_key}_USER"], user=ENV[f"{user_key}_USER"],
                  password=ENV[f"{user_key}_PASSWORD"], **kw)


# ---- a building's devices, with accounts -------------------------------------------------

def keep_alive_zero():
    for proto in (V311, V5):
        c = door("DOOR", proto=proto, keepalive=0)
        rc = c.pub("door/d1/state", '{"state":"closed"}')
        assert not rc.is_failure, f"{proto}: {rc}"
        c.close()


def refused_publish_is_reported_in_mqtt5():
    c = door("DOOR")
    rc = c.pub("door/d2/read", card_read("forged"))
    assert rc.value == 0x87, f"PUBACK {rc}"
    c.close()


def a_command_waits_for_a_controller_that_comes_back():
    # The lock keeps a session (MQTT 5, an hour), goes away, and a card is read meanwhile.
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    lock = door("LOCK", props=props, clean=False)
    lock.sub("door/d1/command")
    lock.close()
    reader = door("DOOR")
    reader.pub("door/d1/read", card_read("while-away"))
    time.sleep(1.0)
    lock = door("LOCK", props=props, clean=False)
    assert lock.session_present, "the session was not kept"
    m = lock.get(timeout=5)
    assert m is not None, "the queued command was not delivered"
    assert b"while-away" in m.payload and b"unlock" in m.payload, m.payload
    expiry = getattr(m.properties, "MessageExpiryInterval", None)
    assert expiry is not None and expiry <= 10, f"expiry {expiry}"
    # Away longer than the command's expiry: nothing old arrives.
    lock.close()
    reader.pub("door/d1/read", card_read("long-gone"))
    time.sleep(11.5)
    lock = door("LOCK", props=props, clean=False)
    late = lock.get(timeout=2)
    assert late is None, f"an expired command arrived: {late.payload}"
    lock.close()
    reader.close()


def a_persistent_mqtt311_session_gets_its_command():
    lock = door("LOCK", proto=V311, clean=False)
    lock.sub("door/d1/command")
    lock.close()
    reader = door("DOOR")
    reader.pub("door/d1/read", card_read("v311-away"))
    time.sleep(1.0)
    lock = door("LOCK", proto=V311, clean=False)
    m = lock.get(timeout=5)
    assert m is not None and b"v311-away" in m.payload, m and m.payload
    lock.close()
    reader.close()
    # Leave no session behind.
    door("LOCK", proto=V311, clean=True).close()


# ---- MQTT 5 features, with anonymous clients on telemetry (the broker's lab mode) --------

def anon(**kw):
    return Client(name("anon"), **kw)


def retained_message_reaches_the_next_subscriber():
    status = TELEMETRY.rsplit("/", 1)[0] + "/LWT"
    p = anon()
    p.pub(status, "Online", retain=True)
    s = anon()
    s.sub(status)
    m = s.get()
    assert m is not None and m.payload == b"Online" and m.retain, m
    p.pub(status, b"", retain=True)  # clears it
    p.close()
    s.close()


def topic_alias_from_the_client():
    s = anon()
    s.sub(TELEMETRY)
    p = anon()
    p.pub(TELEMETRY, "one", props=publish_props(TopicAlias=1))
    p.pub("", "two", props=publish_props(TopicAlias=1))
    got = [s.get(), s.get()]
    assert all(m is not None and m.topic == TELEMETRY for m in got), got
    assert [m.payload for m in got] == [b"one", b"two"]
    p.close()
    s.close()


def receive_maximum_and_maximum_packet_size():
    props = Properties(PacketTypes.CONNECT)
    props.ReceiveMaximum = 2
    props.MaximumPacketSize = 512
    s = anon(props=props)
    s.sub(TELEMETRY)
    p = anon()
    p.pub(TELEMETRY, "x" * 2000)  # larger than the subscriber takes: not sent to it
    for i in range(20):
        p.pub(TELEMETRY, f"m{i}")
    got = [s.get() for _ in range(20)]
    assert all(m is not None for m in got), "messages lost under Receive Maximum 2"
    assert [m.payload for m in got] == [f"m{i}".encode() for i in range(20)]
    p.close()
    s.close()


def payload_format_expiry_and_user_properties_arrive():
    s = anon()
    s.sub(TELEMETRY)
    p = anon()
    props = publish_props(PayloadFormatIndicator=1, MessageExpiryInterval=60,
                          UserProperty=[("site", "b1")], ContentType="application/json")
    p.pub(TELEMETRY, "{}", props=props)
    m = s.get()
    assert m is not None
    mp = m.properties
    assert mp.PayloadFormatIndicator == 1, mp
    assert 0 < mp.MessageExpiryInterval <= 60, mp
    assert ("site", "b1") in mp.UserProperty, mp
    assert mp.ContentType == "application/json", mp
    p.close()
    s.close()


def subscribe_options():
    c = anon()
    c.sub(TELEMETRY, options=SubscribeOptions(qos=1, noLocal=True))
    c.pub(TELEMETRY, "mine")
    assert c.get(timeout=1.5) is None, "no-local delivered our own message"
    status = TELEMETRY.rsplit("/", 1)[0] + "/LWT"
    c.pub(status, "Online", retain=True)
    kept = anon()
    kept.sub(status, options=SubscribeOptions(qos=1, retainAsPublished=True))
    m = kept.get()
    assert m is not None and m.retain, "retained message"
    kept.pub(status, "Again", retain=True)
    m = kept.get()
    assert m is not None and m.retain, "retain-as-published cleared the flag"
    none = anon()
    none.sub(status, options=SubscribeOptions(qos=1, retainHandling=2))
    assert none.get(timeout=1.5) is None, "retain handling 2 sent the retained message"
    c.pub(status, b"", retain=True)
    for x in (c, kept, none):
        x.close()


def session_expiry_ends_a_session():
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 1
    cid = name("expiring")
    c = Client(cid, props=props, clean=False)
    c.sub(TELEMETRY)
    c.close()
    time.sleep(2.5)
    again = Client(cid, props=props, clean=False)
    assert not again.session_present, "the session outlived its expiry"
    again.close()


CHECKS = [
    keep_alive_zero,
    refused_publish_is_reported_in_mqtt5,
    a_command_waits_for_a_controller_that_comes_back,
    a_persistent_mqtt311_session_gets_its_command,
    retained_message_reaches_the_next_subscriber,
    topic_alias_from_the_client,
    receive_maximum_and_maximum_packet_size,
    payload_format_expiry_and_user_properties_arrive,
    subscribe_options,
    session_expiry_ends_a_session,
]

failed = 0
for check in CHECKS:
    try:
        check()
        print(f"ok {check.__name__}", flush=True)
    except Exception as e:  # every check runs; each failure is reported with its reason
        failed += 1
        print(f"FAIL {check.__name__}: {type(e).__name__}: {e}", flush=True)
sys.exit(1 if failed else 0)
