"""benchmarks/mlvae_results.py: a line per (system, seed), reruns skip finished lines, the table's rows,
re-evaluation of the saved runs."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
TINY = ["--variant=", "--seeds=0", "--held_out=8,9", "--set=epochs=1", "--set=model.hidden_units=(16,)",
        "--set=model.content_dim=3", "--set=model.style_dim=2", "--set=groups_per_batch=8", "--set=group_size=4"]


def run(tmp_path, *args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "mlvae_results.py"), *TINY,
                           f"--work_dir={tmp_path / 'runs'}", f"--results={tmp_path / 'r.jsonl'}", *args],
                          capture_output=True, text=True, timeout=300, env=ENV, cwd=ROOT)


def test_the_benchmark_writes_a_line_per_system_and_skips_them_on_a_rerun(tmp_path):
    done = run(tmp_path, "--systems=product,held_out,plain_vae")
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert [r["system"] for r in rows] == ["product", "held_out", "plain_vae"]
    assert rows[1]["settings"]["held_out_classes"] == [8, 9] and rows[0]["settings"]["held_out_classes"] == []
    assert rows[2]["latent_dim"] == 5  # the plain VAE's latent is content_dim + style_dim
    assert set(rows[1]["n_shot_accuracy_unseen"]) == {"1", "5", "10"}
    rows_of_table = [line for line in done.stdout.splitlines() if line.startswith("| digits |")]
    assert [line.split("|")[2].strip() for line in rows_of_table] == ["product", "held_out", "plain_vae"]

    again = run(tmp_path, "--systems=product,held_out,plain_vae")
    assert again.returncode == 0, again.stderr[-2000:]
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == 3  # nothing ran twice

    wrong = run(tmp_path, "--systems=product,ladder")
    assert wrong.returncode == 2 and "--systems: unknown ['ladder']" in wrong.stderr
    assert "Traceback" not in wrong.stderr


def test_reevaluate_restores_the_saved_runs_and_rewrites_their_lines(tmp_path):
    done = run(tmp_path, "--systems=product,held_out")
    assert done.returncode == 0, done.stderr[-2000:]
    before = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    trained = before[1]["content_probe_accuracy"]
    # A mark in place of a figure: re-evaluation must replace it with the run's own figure.
    before[1]["content_probe_accuracy"] = -1.0
    (tmp_path / "r.jsonl").write_text("".join(json.dumps(row) + "\n" for row in before))

    again = run(tmp_path, "--systems=held_out", "--reevaluate")
    assert again.returncode == 0, again.stderr[-2000:]
    after = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert len(after) == 2 and after[0] == before[0]  # the product line was not chosen
    # The probe is deterministic (the same examples, a deterministic fit), so the restored run,
    # restored from the checkpoint its training evaluated, reproduces it exactly.
    assert after[1]["content_probe_accuracy"] == trained
