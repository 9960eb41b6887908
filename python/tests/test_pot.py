"""The Python package on the real SmolLM2 fixture: the same results as the `pot` command."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

import pot


def test_verify_a_model_against_itself_is_same(smollm2, key, tmp_path):
    events = []
    out = tmp_path / "report.json"
    r = pot.verify(smollm2, smollm2, mode="quick", key=key, output=out, progress=events.append)
    assert r.final_decision == "SAME"
    assert r.success and r.confidence == 0.975
    assert r.queries is not None and r.queries >= 1
    assert r.interval[0] <= r.effect_size <= r.interval[1]
    # The report is the one the command writes, field for field.
    assert json.loads(r.to_json()) == json.loads(out.read_text())
    assert r["mode"]["name"] == "QUICK_GATE"
    # Progress: the stages, then one event per query with the running interval.
    kinds = {e["event"] for e in events}
    assert {"stage", "query"} <= kinds, kinds
    assert sum(e["event"] == "query" for e in events) == r.queries


def test_a_key_may_be_a_file_or_hex_and_gives_the_same_challenges(key, tmp_path):
    path = tmp_path / "key.hex"
    path.write_text(key.hex())
    os.chmod(path, 0o600)
    by_bytes = pot.challenges(key, run_id="py", mode="quick", n=3)
    assert pot.challenges(path, run_id="py", mode="quick", n=3) == by_bytes
    assert pot.challenges(key.hex(), run_id="py", mode="quick", n=3) == by_bytes
    assert len(by_bytes["challenges"]) == 3
    assert pot.challenges(key, run_id="other", mode="quick", n=3) != by_bytes


def test_fingerprint_then_verify_against_it(smollm2, key, tmp_path):
    fp = tmp_path / "ref.potfp"
    written = pot.fingerprint(smollm2, fp, key=key, mode="quick", run_id="fp")
    assert written["challenges"] == 48 and fp.is_file()
    r = pot.verify(None, smollm2, reference=fp, mode="quick", key=key, run_id="fp")
    assert r.final_decision == "SAME"


def test_plan_of_a_model_and_of_a_shape(smollm2):
    p = pot.plan(smollm2, mode="quick")
    assert p["architecture"] == "llama" and p["challenges"] == 48
    assert p["verify"]["strategy"] == "resident"
    big = pot.plan(shape="70b", max_memory_gb=8)
    assert big["parameters"] > 60e9
    assert not any(row["fits"] and row["strategy"] == "resident" for row in big["strategies"])


def test_decide_on_scores():
    same = pot.decide([0.0] * 48, "quick")
    assert same["verdict"] == "SAME"
    different = pot.decide([0.3] * 48, "quick")
    assert different["verdict"] == "DIFFERENT"
    assert pot.decide([0.0], "quick")["verdict"] is None  # too few to decide


def test_errors_are_exceptions_with_the_commands_exit_codes(smollm2, key, tmp_path):
    with pytest.raises(pot.BadInputError) as e:
        pot.verify(str(tmp_path / "absent.gguf"), smollm2, mode="quick", key=key)
    assert e.value.exit_code == 4 and "does not exist" in str(e.value)
    with pytest.raises(pot.UsageError) as e:
        pot.verify(smollm2, smollm2, mode="fastest", key=key)
    assert e.value.exit_code == 2 and "quick, audit or extended" in str(e.value)
    with pytest.raises(pot.UsageError, match="no master key"):
        pot.verify(smollm2, smollm2, mode="quick")
    with pytest.raises(pot.UsageError):
        pot.decide([0.0], "quick", method="coin")
    # A repository that is not in the Hugging Face cache: bad input, naming what to do.
    env = dict(os.environ, HF_HUB_CACHE=str(tmp_path / "hub"))
    code = "import pot; pot.plan('HuggingFaceTB/NotThere')"
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert "BadInputError" in p.stderr and "hf download HuggingFaceTB/NotThere" in p.stderr, p.stderr
    # A progress callback that raises stops the run and its exception comes back.
    def boom(event):
        raise ValueError("stop here")

    with pytest.raises(ValueError, match="stop here"):
        pot.verify(smollm2, smollm2, mode="quick", key=key, progress=boom)


def test_ctrl_c_stops_a_run_cleanly(smollm2, key, tmp_path):
    """SIGINT while scoring: KeyboardInterrupt soon after, and the report file, if any, whole."""
    out = tmp_path / "report.json"
    script = textwrap.dedent(
        f"""
        import os, signal, time, pot
        sent = []
        def on_progress(event):
            if event["event"] == "query" and not sent:
                sent.append(time.monotonic())
                os.kill(os.getpid(), signal.SIGINT)
        try:
            pot.verify({smollm2!r}, {smollm2!r}, mode="extended", key={key!r},
                       output={str(out)!r}, progress=on_progress)
            print("finished")
        except KeyboardInterrupt:
            print("interrupted after %.2f s" % (time.monotonic() - sent[0]))
        """
    )
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("interrupted"), p.stdout + p.stderr
    assert float(p.stdout.split()[2]) < 30, p.stdout
    if out.exists():
        report = json.loads(out.read_text())
        assert report["success"] is False and report["memory"]["abort"] == "interrupted"
