"""Verdicts to the line controller over MQTT: each verdict line, as it is logged, to a broker a PLC or MES reads.

The JSONL verdict log stays the record of truth. Publishing never blocks the inspect loop and never costs a
verdict: messages go through paho-mqtt's own network thread and a bounded queue; while the broker is away
they wait there (QoS 1) up to ``max_queued`` and beyond that are dropped and counted; the client reconnects
by itself. :attr:`MqttPublisher.counts` says what became of them.

Topic ``<prefix>/<lane>/verdict``; payload the JSON object of the verdict line (``time``, ``source``,
``frame_id``, ``file``, ``verdict`` OK/NG/ERROR, ``score``, ``raw_score``, ``threshold``, ...).

Example::

    pub = MqttPublisher("mqtt://127.0.0.1:1883/apc/line1")
    pub.publish("cam0", {"frame_id": 7, "verdict": "NG", "score": 0.91})
    pub.close(timeout_s=2.0); pub.counts        # {"queued": 1, "sent": 1, "dropped": 0, ...}
"""
from __future__ import annotations

import json
import logging
import threading
import time
from urllib.parse import urlparse

log = logging.getLogger(__name__)


def parse_mqtt_url(url: str) -> tuple[str, int, str]:
    """``mqtt://host[:port]/topic/prefix`` -> (host, port, prefix); ``ValueError`` naming what is wrong."""
    u = urlparse(url)
    if u.scheme != "mqtt" or not u.hostname:
        raise ValueError(f"MQTT target must look like mqtt://HOST[:PORT]/TOPIC_PREFIX, got {url!r}")
    prefix = u.path.strip("/")
    if not prefix or u.fragment or "#" in url or "+" in prefix:
        raise ValueError(f"MQTT topic prefix must be a plain topic (no + or #), got {prefix!r} in {url!r}")
    try:
        port = u.port or 1883
    except ValueError:
        raise ValueError(f"MQTT port in {url!r} is not a number in 1..65535") from None
    return u.hostname, port, prefix


class MqttPublisher:
    """Publishes verdict records to ``mqtt://HOST[:PORT]/PREFIX`` (paho-mqtt, the ``mqtt`` extra)."""

    def __init__(self, url: str, qos: int = 1, max_queued: int = 10_000, client_id: str | None = None):
        host, port, self.prefix = parse_mqtt_url(url)
        if qos not in (0, 1, 2):
            raise ValueError(f"MQTT QoS must be 0, 1 or 2, got {qos!r}")
        try:
            import paho.mqtt.client as mqtt
        except ImportError:
            raise ValueError("publishing to MQTT needs paho-mqtt: pip install 'apc-edge[mqtt]'") from None
        self.url, self.qos = url, qos
        self._mqtt = mqtt
        self._lock = threading.RLock()           # paho may call on_publish from inside publish()
        self.counts = {"queued": 0, "sent": 0, "dropped": 0, "connects": 0, "disconnects": 0}
        self._pending: set[int] = set()
        client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
                             client_id=client_id or f"apc-edge-{int(time.time() * 1000) % 10**9}")
        client.max_queued_messages_set(max_queued)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.connect_async(host, port, keepalive=30)
        client.loop_start()
        self._client = client

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        with self._lock:
            self.counts["connects"] += 1
        log.info("MQTT connected to %s (%s)", self.url, reason_code)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        with self._lock:
            self.counts["disconnects"] += 1
        log.warning("MQTT disconnected from %s (%s); verdicts are queued and the client reconnects",
                    self.url, reason_code)

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        with self._lock:
            if mid in self._pending:
                self._pending.discard(mid)
                self.counts["sent"] += 1

    def publish(self, lane: str, record: dict) -> bool:
        """Queue ``record`` for ``<prefix>/<lane>/verdict``; never blocks or raises. False when it was dropped."""
        try:
            payload = json.dumps(record, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError):
            payload = json.dumps({k: (v if isinstance(v, (str, int, bool)) or v is None else str(v))
                                  for k, v in record.items()})
        topic = f"{self.prefix}/{lane.replace('/', '_').replace('+', '_').replace('#', '_')}/verdict"
        try:
            with self._lock:       # on_publish may run before publish() returns: register the mid under the lock
                info = self._client.publish(topic, payload, qos=self.qos)
                ok = info.rc == self._mqtt.MQTT_ERR_SUCCESS or (info.rc == self._mqtt.MQTT_ERR_NO_CONN and self.qos)
                if ok:
                    self.counts["queued"] += 1
                    self._pending.add(info.mid)
                else:
                    self.counts["dropped"] += 1
            return bool(ok)
        except Exception as exc:          # a publisher fault must never reach the inspect loop
            with self._lock:
                self.counts["dropped"] += 1
            log.warning("MQTT publish to %s failed: %s", self.url, exc)
            return False

    def close(self, timeout_s: float = 2.0) -> dict:
        """Give queued messages up to ``timeout_s`` to go out, then disconnect; returns the counts
        (``unsent``: queued but not acknowledged by the broker)."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            with self._lock:
                if not self._pending:
                    break
            time.sleep(0.05)
        try:
            self._client.disconnect()
            self._client.loop_stop()
        except Exception as exc:
            log.warning("MQTT disconnect from %s: %s", self.url, exc)
        with self._lock:
            return {**self.counts, "unsent": len(self._pending), "target": self.url}
