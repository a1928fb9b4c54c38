"""The preview CLI, run as users run it."""
from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(*args):
    return subprocess.run([sys.executable, "-m", "merge_core", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


def test_json_output(sd1_keys):
    p = run("--arch", "sd1", "--alpha", "0.3", "--spec", "OUT06:attn:0.5,OUT06:attn2.to_k:0.2", "--format", "json")
    assert p.returncode == 0, p.stderr
    assert "RuntimeWarning" not in p.stderr
    data = json.loads(p.stdout)
    assert list(data) == sd1_keys
    for k, r in data.items():
        want = 0.3
        if ".output_blocks.6." in k and "attn" in k:
            want = 0.2 if "attn2.to_k" in k else 0.5
        assert r == want, k


def test_keys_file_block_weights_and_table(tmp_path):
    keys = ["diffusion_model.input_blocks.1.1.proj_in.weight", "first_stage_model.decoder.conv_in.weight",
            "clip_l.transformer.text_model.final_layer_norm.weight"]
    kf = tmp_path / "keys.txt"
    kf.write_text("\n".join(keys) + "\n")
    sf = tmp_path / "spec.txt"
    sf.write_text("# proj only\nIN01:proj_in:0.75\n")
    p = run("--arch", "sd1", "--keys-file", str(kf), "--block-weights", "ALL_B", "--spec-file", str(sf),
            "--format", "json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == {keys[0]: 0.75, keys[2]: 1.0}  # VAE key: no block, not listed
    p = run("--arch", "sd1", "--keys-file", str(kf))
    assert p.returncode == 0
    lines = p.stdout.splitlines()
    assert lines[0].split() == ["key", "block", "ratio"]
    assert lines[1].split() == [keys[0], "IN01", "0.5"] and lines[2].split() == [keys[2], "BASE", "0.5"]


def test_invalid_spec_exit_2():
    p = run("--arch", "sdxl", "--spec", "IN01::0.1\nOUT4:attn:0.5")
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.strip() == ("line 2, column 1: unknown block 'OUT4' in entry 'OUT4:attn:0.5' "
                                "(did you mean OUT04? valid: BASE, IN00..IN08, M00, OUT00..OUT08)")
    p = run("--arch", "sd1", "--block-weights", "1,2,3")
    assert p.returncode == 2 and "26 values" in p.stderr
    p = run("--arch", "sd7")
    assert p.returncode == 2


def test_warnings_go_to_stderr():
    p = run("--arch", "flux", "--spec", "D00:nosuch:0.5", "--format", "json")
    assert p.returncode == 0
    assert "matches no key of Flux" in p.stderr
    assert json.loads(p.stdout)


def test_core_import_is_light():
    """The CLI and the spec editor's validation route must not pay for importing torch."""
    code = "import sys, merge_core; merge_core.resolve_ratios; print('torch' in sys.modules)"
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.stdout.strip() == "False", p.stderr


def test_change_report():
    """`--changes` lists exactly the keys a spec moves away from alpha, with both ratios."""
    p = run("--arch", "sd1", "--alpha", "0.25", "--spec", "OUT05:attn2:0.75", "--changes")
    assert p.returncode == 0 and "RuntimeWarning" not in p.stderr, p.stderr
    changed = [l for l in p.stdout.splitlines() if l.startswith("OUT05 ") and "0.25 -> 0.75" in l]
    assert len(changed) == 5  # SD1 OUT05 attn2: to_q, to_k, to_v (weights), to_out.0 weight and bias
