"""The paho client subclass's QoS 2 fixes, through paho's own reconnect path (they override
private paho methods: these tests say when a paho release moves them)."""

from __future__ import annotations

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MessageState

from notifykit.transports._mqtt_session import _Client

from .support import free_port


@pytest.mark.parametrize(("client_class", "after"), [(_Client, MessageState.MQTT_MS_RESEND_PUBREL),
                                                     (paho.Client, MessageState.MQTT_MS_PUBLISH)])
def test_a_message_awaiting_pubcomp_still_resends_its_pubrel_after_failed_reconnects(
        client_class: type[paho.Client], after: MessageState) -> None:
    """paho resets its message states at every reconnect attempt, and its second reset turned a
    message awaiting PUBCOMP into a new PUBLISH without DUP, which Mosquitto then booked twice
    (the stock client's row shows the bug the subclass mends)."""
    client = client_class(CallbackAPIVersion.VERSION2, client_id="nk-test-session", protocol=paho.MQTTv5)
    client.connect_async("127.0.0.1", free_port(), clean_start=False)  # nothing listens there
    info = client.publish("nk-test/info/x", b"{}", qos=2)  # not connected: kept in the session
    client._out_messages[info.mid].state = MessageState.MQTT_MS_WAIT_FOR_PUBCOMP  # as after its PUBREC
    for _ in range(2):
        with pytest.raises(ConnectionRefusedError):
            client.reconnect()
    assert client._out_messages[info.mid].state == after
