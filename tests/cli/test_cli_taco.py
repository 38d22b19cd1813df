"""TaCo from the command line: pretraining on a user's folder, and the bad inputs of issue 13 as exit-2 errors."""

import numpy as np
import pytest
from helpers import phantom

from medrep.cli import main
from medrep.data.synthetic import write_png

TINY = ["model.name=resnet10", "model.widen_factor=0.25", "data.size=32", "data.crop=null", "data.batch_size=4",
        "data.tasks_per_batch=2", "method.proj_hidden_dim=16", "method.proj_dim=8", "trainer.max_steps=2", "data.sets=[]"]


def run(argv: list[str]) -> int:
    """The exit code, whether the error is found while parsing (argparse exits) or while running."""
    try:
        return main(argv)
    except SystemExit as exit:
        return exit.code


@pytest.fixture
def folder(tmp_path):
    image, _ = phantom(40)
    for k in range(4):
        write_png(tmp_path / "pngs" / f"img{k}.png", (255 * np.rot90(image, k)).astype(np.uint8))
    return tmp_path / "pngs"


@pytest.mark.slow
def test_pretrain_on_a_users_folder_exports_a_six_channel_encoder(folder, tmp_path):
    run = tmp_path / "run"
    assert main(["pretrain", "--recipe", "taco_medical", "--data", str(folder), *TINY, f"trainer.output_dir={run}",
                 "data.families=[generative,transformation]"]) == 0
    assert '"in_channels": 6' in (run / "encoder" / "encoder.json").read_text()


@pytest.mark.parametrize("extra, needle", [
    (["data.tasks=[segment_structure]"], "task 'segment_structure': needs a mask, and none of the data sets has one (user)"),
    (["data.tasks=[rotat]"], "data.tasks: unknown task 'rotat'; did you mean rotate"),
    (["data.families=[geometric]"], "data.families: unknown family 'geometric'"),
    (["data.strength=[0.5,1.5]"], "data.strength: must be [low, high]"),
    (["data.tasks=[rotate]", "data.crop=64"], "task 'rotate': needs images of at least 64 x 64 pixels"),
    (["data.tasks=[rotate]", "data.sets=[no-such-set]"], "unknown slice set 'no-such-set'"),
    (["data.tasks=[rotate,gamma]", "data.batch_size=5"], "data.batch_size: must be a multiple of data.tasks_per_batch (2)"),
])
def test_bad_task_input_exits_2_naming_it(folder, tmp_path, capsys, extra, needle):
    code = main(["pretrain", "--recipe", "taco_medical", "--data", str(folder), *TINY, f"trainer.output_dir={tmp_path / 'r'}", *extra])
    assert code == 2
    assert needle in capsys.readouterr().err


def test_a_folder_without_usable_images_names_the_set(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    write_png(tmp_path / "empty" / "black.png", np.zeros((40, 40), np.uint8))
    code = main(["pretrain", "--recipe", "taco_medical", "--data", str(tmp_path / "empty"), *TINY, "data.tasks=[rotate]",
                 f"trainer.output_dir={tmp_path / 'r'}"])
    assert code == 2
    assert "slice set user: no usable image" in capsys.readouterr().err


def test_taco_refuses_an_image_source_and_simclr_refuses_task_samples(folder, tmp_path, capsys):
    assert run(["pretrain", "--recipe", "taco_medical", "--data", str(folder), "data.source=folder", *TINY[:-1],
                 f"trainer.output_dir={tmp_path / 'a'}"]) == 2
    assert "method 'taco' trains on task samples" in capsys.readouterr().err
    assert run(["pretrain", "--recipe", "simclr_pneumoniamnist", "--data", str(folder), "data.source=tasks",
                 f"trainer.output_dir={tmp_path / 'b'}"]) == 2
    assert "method 'simclr' trains on images, not task samples" in capsys.readouterr().err
