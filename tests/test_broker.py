"""actors.broker: every process's broker, the same options everywhere."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.stack import ROOT

TWO_BROKERS = textwrap.dedent("""
    from actors.broker import make_broker
    first = make_broker("redis://127.0.0.1:9/0")    # no command is sent: nothing need listen there
    second = make_broker("redis://127.0.0.1:9/0")   # as the governor does after a lost reply
    assert first is not second and first.client is not second.client
    print("two brokers")
""")


def test_a_process_with_dramatiq_metrics_on_can_make_a_second_broker(tmp_path):
    """With PROMETHEUS_MULTIPROC_DIR set (as `keepa-deals up` runs every process), a broker carries
    the Dramatiq metrics middleware; a second broker in the process must not register its metrics
    twice (prometheus-client refuses duplicate series)."""
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", TWO_BROKERS], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "two brokers"
