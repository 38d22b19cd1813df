"""TextEncoder on the bundled all-MiniLM-L6-v2, loaded offline; the model is loaded once per module."""

import json
import os

import pytest
import torch
from helpers import require_text_model

DEFAULT = require_text_model()  # skips this module without transformers or the packaged model

from medrep.errors import MedrepError  # noqa: E402
from medrep.models import TextEncoder  # noqa: E402


@pytest.fixture(scope="module")
def offline():
    """HF_HUB_OFFLINE=1 so that any attempt to reach the hub fails loudly instead of downloading."""
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setenv("TRANSFORMERS_OFFLINE", "1")
    yield
    mp.undo()


@pytest.fixture(scope="module")
def encoder(offline) -> TextEncoder:
    return TextEncoder().eval()


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a, b, dim=-1).item()


def test_default_model_folder():
    assert (DEFAULT / "config.json").is_file() and (DEFAULT / "model.safetensors").is_file()


def test_shapes_and_config(encoder):
    texts = ["No pleural effusion.", "Left basilar opacity, possibly atelectasis or pneumonia."]
    with torch.no_grad():
        out = encoder(texts)
    batch, length = out["mask"].shape
    assert batch == 2 and length > 5
    assert out["tokens"].shape == (2, length, 384) and out["sentence"].shape == (2, 384)
    assert out["mask"].dtype == torch.bool and out["mask"][0].sum() < out["mask"][1].sum()
    assert encoder.out_dim == 384
    assert json.loads(json.dumps(encoder.config)) == dict(model=None, max_length=128, trainable_layers="all", pooling="mean")


def test_mean_pooling_is_masked_mean_and_tokenized_input_matches(encoder):
    texts = ["Heart size is normal.", "There is a small right apical pneumothorax without mediastinal shift."]
    batch = encoder.tokenize(texts)
    assert set(batch) == {"input_ids", "attention_mask"}
    with torch.no_grad():
        out = encoder(batch)
        again = encoder(texts)
    mask = batch["attention_mask"].unsqueeze(-1).float()
    manual = (out["tokens"] * mask).sum(1) / mask.sum(1)
    assert torch.allclose(out["sentence"], manual, atol=1e-5)
    # the short text is padded; its sentence must equal encoding it alone (padding has no effect)
    with torch.no_grad():
        alone = encoder([texts[0]])
    assert torch.allclose(out["sentence"][0], alone["sentence"][0], atol=1e-4)
    assert torch.allclose(out["sentence"], again["sentence"])


def test_paraphrase_closer_than_unrelated(encoder):
    with torch.no_grad():
        s = encoder(["no pleural effusion", "the pleural space is clear", "fracture of the left femur"])["sentence"]
    para, unrelated = cosine(s[0], s[1]), cosine(s[0], s[2])
    assert para > unrelated + 0.1, (para, unrelated)
    assert cosine(s[1], s[0]) > cosine(s[1], s[2])


def test_max_length_truncates(offline, encoder):
    long_text = " ".join(["the lungs are clear"] * 100)
    assert encoder.tokenize([long_text])["input_ids"].shape[1] == 128
    short = TextEncoder(max_length=16).eval()
    batch = short.tokenize([long_text, "clear"])
    assert batch["input_ids"].shape == (2, 16) and batch["attention_mask"][0].all()
    assert batch["input_ids"][0, -1].item() == short.tokenizer.sep_token_id
    with torch.no_grad():
        assert short([long_text])["tokens"].shape == (1, 16, 384)
    assert sum(len(w.tokens) for w in short.word_spans([long_text])[0]) == 14  # 16 minus [CLS] and [SEP]


def _trainable(enc: TextEncoder) -> set[str]:
    return {name for name, p in enc.model.named_parameters() if p.requires_grad}


def test_trainable_layers(encoder):
    names = {name for name, _ in encoder.model.named_parameters()}
    last_two = {n for n in names if n.startswith(("encoder.layer.4.", "encoder.layer.5."))}
    assert _trainable(encoder) == {n for n in names if not n.startswith("pooler.")}  # "all"; the unused pooler stays frozen
    encoder.train()
    try:
        for value in (0, "none"):
            encoder.set_trainable_layers(value)
            assert _trainable(encoder) == set() and encoder.config["trainable_layers"] == value
            assert encoder.training and not any(m.training for m in encoder.model.modules())  # frozen: no dropout

        encoder.set_trainable_layers(2)
        assert _trainable(encoder) == last_two
        assert encoder.model.encoder.layer[5].training and not encoder.model.encoder.layer[3].training
        assert not encoder.model.embeddings.training
        encoder.eval()
        assert not any(m.training for m in encoder.modules())

        encoder.set_trainable_layers(6)  # every layer, embeddings still frozen
        assert _trainable(encoder) == {n for n in names if n.startswith("encoder.layer.")}
        with pytest.raises(MedrepError) as info:
            encoder.set_trainable_layers(7)
        assert info.value.where == "text.trainable_layers"
    finally:
        encoder.set_trainable_layers("all")
        encoder.eval()
    assert _trainable(encoder) == {n for n in names if not n.startswith("pooler.")}


def test_trainable_layers_from_constructor(offline):
    enc = TextEncoder(trainable_layers=1)
    assert _trainable(enc) and all(n.startswith("encoder.layer.5.") for n in _trainable(enc))
    enc(["small left effusion"])["sentence"].sum().backward()
    assert enc.model.embeddings.word_embeddings.weight.grad is None
    assert enc.model.encoder.layer[4].output.dense.weight.grad is None
    assert enc.model.encoder.layer[5].output.dense.weight.grad is not None


@pytest.mark.parametrize("kwargs, where", [
    (dict(trainable_layers=-1), "text.trainable_layers"),
    (dict(trainable_layers="some"), "text.trainable_layers"),
    (dict(pooling="max"), "text.pooling"),
    (dict(max_length=1), "text.max_length"),
    (dict(max_length=4096), "text.max_length"),
])
def test_bad_options(offline, kwargs, where):
    with pytest.raises(MedrepError) as info:
        TextEncoder(**kwargs)
    assert info.value.where == where


@pytest.mark.parametrize("model", ["made-up-org/not-a-real-model-xyz", "/nonexistent/folder/bioclinicalbert", "not_a_model_xyz"])
def test_missing_model_names_text_model(offline, model):
    with pytest.raises(MedrepError, match="local") as info:
        TextEncoder(model)
    assert info.value.where == "text.model"


def test_folder_without_config(offline, tmp_path):
    with pytest.raises(MedrepError, match="config.json") as info:
        TextEncoder(str(tmp_path))
    assert info.value.where == "text.model"


def test_local_folder_and_cls_pooling(offline, encoder):
    enc = TextEncoder(str(DEFAULT), pooling="cls", trainable_layers=0)
    assert enc.config["model"] == str(DEFAULT)
    with torch.no_grad():
        out = enc(["Heart size is normal."])
    assert torch.allclose(out["sentence"], out["tokens"][:, 0])
    rebuilt = TextEncoder(**enc.config)
    rebuilt.load_state_dict(enc.state_dict())


def test_word_spans_group_subwords(encoder):
    texts = ["Small left pneumothorax.", "No effusion"]
    spans = encoder.word_spans(texts)
    assert [w.text for w in spans[0]] == ["Small", "left", "pneumothorax", "."]
    assert [w.text for w in spans[1]] == ["No", "effusion"]
    pneumo = spans[0][2]
    assert len(pneumo.tokens) > 1 and list(pneumo.tokens) == list(range(pneumo.tokens[0], pneumo.tokens[-1] + 1))
    ids = encoder.tokenize(texts)["input_ids"]
    special = set(encoder.tokenizer.all_special_ids)
    covered = {p for w in spans[0] for p in w.tokens}
    assert covered == {p for p, i in enumerate(ids[0].tolist()) if i not in special}
    assert encoder.tokenizer.decode(ids[0, list(pneumo.tokens)]).replace(" ", "") == "pneumothorax"


@pytest.mark.parametrize("texts, where", [
    (["fine", ""], "texts[1]"),
    (["   ", "fine"], "texts[0]"),
    (["fine", "ok", None], "texts[2]"),
    ("a bare string", "texts"),
    ([], "texts"),
])
def test_bad_texts_name_the_index(encoder, texts, where):
    for call in (encoder, encoder.tokenize, encoder.word_spans):
        with pytest.raises(MedrepError) as info:
            call(texts)
        assert info.value.where == where


def test_offline_env_is_set(offline):
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_broken_model_folder(offline, tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(MedrepError, match="cannot load the model folder") as info:
        TextEncoder(str(tmp_path))
    assert info.value.where == "text.model"
