"""Verdicts to the line controller: a real mosquitto broker started by the test on the loopback address."""
import json
import shutil
import socket
import subprocess
import threading
import time

import pytest

from apc_edge.cli.inspect import main as inspect_main
from runlog import lines


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def broker(tmp_path):
    exe = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if shutil.os.path.exists("/usr/sbin/mosquitto") else None)
    if exe is None:
        pytest.skip("mosquitto is not installed (CI installs Debian's mosquitto): MQTT publishing not tested")
    pytest.importorskip("paho.mqtt.client", reason="paho-mqtt (the mqtt extra) is not installed")
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    yield port
    proc.terminate()
    proc.wait(10)


def subscribe(port: int, topic: str):
    import paho.mqtt.client as mqtt

    got, ready = [], threading.Event()
    client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2)
    client.on_connect = lambda c, u, f, rc, p: (c.subscribe(topic, qos=1), ready.set())
    client.on_message = lambda c, u, msg: got.append((msg.topic, json.loads(msg.payload)))
    client.connect("127.0.0.1", port)
    client.loop_start()
    assert ready.wait(10)
    time.sleep(0.3)                 # the subscription is in place before anything is published
    return client, got


def test_every_verdict_reaches_the_broker(broker, model_dir_openvino, frames_dir, tmp_path, capsys):
    client, got = subscribe(broker, "apc/line1/#")
    out = tmp_path / "out"
    assert inspect_main([str(model_dir_openvino), "--folder", str(frames_dir), "--out", str(out), "-q",
                         "--mqtt", f"mqtt://127.0.0.1:{broker}/apc/line1"]) == 0
    deadline = time.time() + 10
    recs = lines(out / "verdicts.jsonl")
    while len(got) < len(recs) and time.time() < deadline:
        time.sleep(0.05)
    client.loop_stop()
    assert [m for _, m in got] == recs                       # the same lines, in order
    assert {t for t, _ in got} == {f"apc/line1/{frames_dir.name}/verdict"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["published"]["sent"] == len(recs) and summary["published"]["dropped"] == 0
    assert "verdicts acknowledged" in capsys.readouterr().out


def test_no_broker_costs_no_verdict(model_dir_openvino, frames_dir, tmp_path):
    pytest.importorskip("paho.mqtt.client", reason="paho-mqtt (the mqtt extra) is not installed")
    out = tmp_path / "out"
    port = free_port()                                       # nothing listens there
    t0 = time.monotonic()
    assert inspect_main([str(model_dir_openvino), "--folder", str(frames_dir), "--out", str(out), "-q",
                         "--mqtt", f"mqtt://127.0.0.1:{port}/apc/line1"]) == 0
    assert time.monotonic() - t0 < 60
    assert len(lines(out / "verdicts.jsonl")) == 6           # every verdict logged all the same
    pub = json.loads((out / "summary.json").read_text())["published"]
    assert pub["sent"] == 0 and pub["unsent"] + pub["dropped"] == 6


@pytest.mark.parametrize("target, message", [("http://x/y", "mqtt://HOST"), ("mqtt://host", "topic prefix"),
                                             ("mqtt://host/a/#", "topic prefix")])
def test_bad_mqtt_targets(model_dir_openvino, frames_dir, target, message, capsys, tmp_path):
    out = tmp_path / "out"
    assert inspect_main([str(model_dir_openvino), "--folder", str(frames_dir), "--mqtt", target,
                         "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()                                   # refused before anything was written
