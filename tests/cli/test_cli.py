import argparse
import json
import subprocess
import sys

import pytest
from helpers import make_npz

from medrep.cli import COMMANDS, build_parser, main
from medrep.cli.evaluate import EVALUATIONS


def _subcommands(parser, path=()):
    """Every (sub)command path of the parser tree, ("evaluate", "linear") and so on, the root included."""
    yield path
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _subcommands(sub, (*path, name))


def _choices(parser) -> list[str]:
    return next(list(a.choices) for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def test_every_help_is_printed(capsys):
    for argv in (["--help"], ["pretrain", "--help"], ["evaluate", "--help"], ["evaluate", "linear", "--help"],
                 ["evaluate", "knn", "--help"], ["embed", "--help"], ["demo", "--help"], ["list", "--help"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 0
        assert "usage: medrep" in capsys.readouterr().out


def test_every_subcommand_help_exits_0(capsys):
    paths = list(_subcommands(build_parser()))
    assert ("evaluate", "zeroshot") in paths and ("prepare", "medpix2") in paths
    for path in paths:
        with pytest.raises(SystemExit) as exit_:
            main([*path, "--help"])
        assert exit_.value.code == 0, path
        assert capsys.readouterr().out.startswith("usage: medrep " + " ".join(path))


def test_the_tables_and_the_parser_name_the_same_commands():
    parser = build_parser()
    assert _choices(parser) == list(COMMANDS)
    evaluate = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["evaluate"]
    assert _choices(evaluate) == list(EVALUATIONS)
    assert all(callable(getattr(command, "run", None)) for command in COMMANDS.values())


def test_shared_options_keep_each_command_default():
    parser = build_parser()
    needs_data, needs_run = ("segment", "taskmap", "slices", "consistency"), ("registration", "retrieval", "zeroshot", "slices")
    batch = {task: parser.parse_args(["evaluate", task, "--run" if task in needs_run else "--encoder",
                                      "x", *(["--data", "d"] if task in needs_data else [])]).batch_size for task in EVALUATIONS}
    assert batch == {"linear": 256, "knn": 256, "finetune": 48, "map": 256, "regions": 64, "distance": 64, "segment": 4, "registration": 8,
                     "retrieval": 32, "zeroshot": 32, "taskmap": 128, "slices": 8,
                     "consistency": 64}
    assert parser.parse_args(["embed", "--encoder", "x", "--out", "f.npz"]).batch_size == 256
    assert parser.parse_args(["demo"]).out == "runs/demo"


def test_help_does_not_import_the_heavy_libraries():
    code = ("import sys\nfrom medrep.cli import main\n"
            "for argv in (['--help'], ['evaluate', '--help'], ['evaluate', 'segment', '--help']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            "print(sorted(m for m in ('torch', 'lightning', 'monai', 'numpy') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_list_names_methods_and_recipes(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "simclr" in out and "resnet18" in out and "simclr_pneumoniamnist" in out
    from medrep.data.sources import source_names

    assert all(name in out for name in source_names())  # every registered source, by kind
    from medrep.tasks import FAMILIES, task_names

    for family in FAMILIES:
        assert f"tasks:     {family} ({len(task_names(family))}): " + ", ".join(task_names(family)) in out


def test_list_tasks_gives_each_task_its_line(capsys):
    assert main(["list", "--tasks"]) == 0
    out = capsys.readouterr().out
    from medrep.tasks import get_task, task_names

    assert all(get_task(n).summary in out for n in task_names())


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["pretrain", "--recipe", "no_such_recipe"], "no_such_recipe"),
        (["pretrain", "--recipe", "simclr_pneumoniamnist", "method.name=simclrr"], "method.name"),
        (["pretrain", "--recipe", "simclr_pneumoniamnist", "optim.lrr=1"], "optim.lrr"),
        (["pretrain", "--recipe", "simclr_pneumoniamnist", "--data", "/no/such/file.npz", "trainer.output_dir=/tmp/x"],
         "/no/such/file.npz"),
        (["evaluate", "linear", "--encoder", "/no/such/run"], "/no/such/run"),
    ],
)
def test_bad_input_exits_2_with_a_named_error(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("medrep: error:") and needle in err


def test_dry_run_prints_resolved_recipe(capsys):
    assert main(["pretrain", "--recipe", "simclr_pneumoniamnist", "--dry-run", "optim.lr=0.5"]) == 0
    assert "lr: 0.5" in capsys.readouterr().out


@pytest.mark.slow
def test_pretrain_evaluate_embed_end_to_end(tmp_path, capsys):
    npz = make_npz(tmp_path / "tiny.npz", n=96)
    run = tmp_path / "run"
    assert main(["pretrain", "--recipe", "simclr_pneumoniamnist", "--data", str(npz), f"trainer.output_dir={run}",
                 "trainer.max_steps=2", "trainer.progress_bar=false", "data.batch_size=16", "model.name=resnet10",
                 "method.proj_hidden_dim=32"]) == 0
    out = tmp_path / "linear.json"
    assert main(["evaluate", "linear", "--encoder", str(run), "--data", str(npz), "--fractions", "0.5", "1.0",
                 "--seeds", "0", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["results"]["fractions"]) == {"0.5", "1"}
    assert 0.0 <= result["results"]["fractions"]["1"]["auroc"]["mean"] <= 1.0
    assert main(["evaluate", "knn", "--encoder", str(run), "--data", str(npz), "--random-init", "--k", "5"]) == 0
    assert "knn (k=5)" in capsys.readouterr().out
    feats = tmp_path / "f.npz"
    assert main(["embed", "--encoder", str(run), "--data", str(npz), "--split", "val", "--out", str(feats)]) == 0
    import numpy as np

    with np.load(feats) as f:
        assert f["features"].shape == (24, 512) and f["labels"].shape == (24,)


@pytest.mark.slow
def test_module_entry_point_runs():
    proc = subprocess.run([sys.executable, "-m", "medrep", "list"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "simclr" in proc.stdout


def _run_dir(tmp_path, npz):
    run = tmp_path / "run"
    assert main(["pretrain", "--recipe", "simclr_pneumoniamnist", "--data", str(npz), f"trainer.output_dir={run}",
                 "trainer.max_steps=1", "trainer.progress_bar=false", "data.batch_size=8", "model.name=resnet10",
                 "method.proj_hidden_dim=16"]) == 0
    return run


def test_data_errors_reach_the_user_as_exit_2(tmp_path, capsys):
    npz = make_npz(tmp_path / "tiny.npz", n=32)
    run = _run_dir(tmp_path, npz)
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip")
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label,split\n,1,train\n")
    nan = tmp_path / "nan.npz"
    import numpy as np

    with np.load(npz) as f:
        arrays = {k: f[k].astype(np.float32) for k in f.files}
    arrays["test_images"][0, 0, 0] = np.nan
    np.savez(nan, **arrays)
    cases = [
        (["evaluate", "linear", "--encoder", str(run), "--data", str(corrupt)], "corrupt.npz"),
        (["evaluate", "linear", "--encoder", str(run), "--data", str(npz), "--test-split", "holdout"], "holdout"),
        (["evaluate", "knn", "--encoder", str(run), "--data", str(manifest)], "m.csv"),
        (["evaluate", "knn", "--encoder", str(run), "--data", str(nan)], "nan.npz"),
        (["pretrain", "--recipe", "simclr_3d_volumes", "--data", str(npz), "data.source=medmnist",
          f"trainer.output_dir={tmp_path / 'r3'}"], "tiny.npz"),
    ]
    for argv, needle in cases:
        capsys.readouterr()
        assert main(argv) == 2, argv
        lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("medrep: error:")]
        assert len(lines) == 1 and needle in lines[0], (argv, lines)


def test_size_option_resizes_for_evaluation(tmp_path, capsys):
    npz = make_npz(tmp_path / "tiny.npz", n=32)
    run = _run_dir(tmp_path, npz)
    feats = tmp_path / "f.npz"
    assert main(["embed", "--encoder", str(run), "--data", str(npz), "--split", "val", "--size", "20", "--out", str(feats)]) == 0
    assert main(["embed", "--encoder", str(run), "--data", str(npz), "--size", "20", "20", "20", "--out", str(feats)]) == 2
    assert "--size" in capsys.readouterr().err


@pytest.mark.slow
def test_evaluate_finetune_end_to_end(tmp_path, capsys):
    npz = make_npz(tmp_path / "tiny.npz", n=32, size=8)
    run = tmp_path / "run"
    assert main(["pretrain", "--recipe", "simclr_pneumoniamnist", "--data", str(npz), f"trainer.output_dir={run}",
                 "trainer.max_steps=1", "trainer.progress_bar=false", "data.batch_size=16", "model.name=resnet10",
                 "method.proj_hidden_dim=32"]) == 0
    out = tmp_path / "finetune.json"
    common = ["evaluate", "finetune", "--encoder", str(run), "--data", str(npz), "--seeds", "0", "--epochs", "1"]
    assert main([*common, "--fractions", "0.5", "1", "--batch-size", "16", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["fractions"]) == {"0.5", "1"} and result["probe"] == "finetune" and result["task"] == "binary"
    assert result["fractions"]["0.5"]["n_train"] == 16 and result["n_val"] == 8 and result["n_test"] == 16
    assert "finetune" in capsys.readouterr().out
    assert main([*common, "--fractions", "1", "--frozen", "--augment", "none", "--random-init", "--val-split", "none"]) == 0
    assert "frozen head" in capsys.readouterr().out
    assert main([*common, "--optimizer", "lbfgs"]) == 2
    assert "optimizer" in capsys.readouterr().err
