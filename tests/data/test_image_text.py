import csv
import gzip
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medrep.data.datasets.image_text import ImageTextRow, read_image_text_manifest
from medrep.data.datasets.image_text_dataset import ImageTextDataset, PackedRows, collate_image_text
from medrep.data.datasets.preprocess import Preprocess
from medrep.data.io.reports import PLACEHOLDER, clean_text, read_text_file, report_text, split_sections, split_sentences
from medrep.data.sources.iu_xray import iu_xray_pairs
from medrep.data.sources.medpix2 import medpix2_pairs, write_example_tree
from medrep.data.sources.mimic_cxr import mimic_cxr_pairs
from medrep.errors import DataError

MIMIC_REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with new onset ascites  // eval for infection

 TECHNIQUE:  Chest PA and lateral

 COMPARISON:  None.

 FINDINGS:

 There is no focal consolidation, pleural effusion or pneumothorax.  Bilateral
 nodular opacities that most likely represent nipple shadows. The
 cardiomediastinal silhouette is normal.  Heart: normal size.
 Nodule measures 5.5 cm, e.g. in the R.U.L. vs. the hilum.

 Impression:
 1. No acute cardiopulmonary process.
 2. Dr. ___ was notified at 11:30 a.m. on ___.
"""


def _words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z]+", PLACEHOLDER.sub(" ", text))


def _png(path: Path, value: int = 100, size: tuple[int, int] = (8, 8)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size, value, np.uint8)).save(path)
    return path


def test_split_sections_mimic_report():
    sections = split_sections(MIMIC_REPORT)
    assert list(sections) == ["examination", "indication", "technique", "comparison", "findings", "impression"]
    assert "FINAL REPORT" not in " ".join(sections.values())
    assert sections["findings"].startswith("There is no focal") and "Heart: normal size." in sections["findings"]
    assert sections["impression"].splitlines()[0] == "1. No acute cardiopulmonary process."
    text = report_text(MIMIC_REPORT)
    assert text.startswith("There is no focal") and text.endswith("on ___.") and "INDICATION" not in text
    assert report_text(MIMIC_REPORT, ("impression",)).startswith("1. No acute")
    assert split_sections("No headers here.\nSecond line.") == {"report": "No headers here.\nSecond line."}
    assert report_text("FINAL REPORT\nINDICATION: cough\nLungs clear.") == "INDICATION: cough\nLungs clear."


def test_split_sentences_hard_cases():
    assert split_sentences(report_text(MIMIC_REPORT)) == [
        "There is no focal consolidation, pleural effusion or pneumothorax.",
        "Bilateral nodular opacities that most likely represent nipple shadows.",
        "The cardiomediastinal silhouette is normal.",
        "Heart: normal size.",
        "Nodule measures 5.5 cm, e.g. in the R.U.L. vs. the hilum.",
        "No acute cardiopulmonary process.",
        "Dr. ___ was notified at 11:30 a.m. on ___.",
    ]
    inline = "1. Cardiomegaly. 2. Right base XXXX opacity 3. Left lung clear.There is no effusion.. XXXX. ___ ."
    assert split_sentences(inline) == ["Cardiomegaly.", "Right base XXXX opacity", "Left lung clear.", "There is no effusion.."]
    assert split_sentences("  \n\n . ") == []


def test_clean_text_and_text_files(tmp_path):
    assert clean_text("  a\n\tb   c ") == "a b c"
    assert clean_text("caf\u00e9 ok".encode()) == "café ok"
    with pytest.raises(DataError, match="row 3.*not UTF-8"):
        clean_text(b"\xff\xfe bad", "row 3")
    with pytest.raises(DataError, match="must be text"):
        clean_text(12)
    (tmp_path / "r.txt").write_bytes(b"FINDINGS: ok\r\n")
    assert read_text_file(tmp_path / "r.txt") == "FINDINGS: ok\n"
    (tmp_path / "bad.txt").write_bytes(b"FINDINGS: \xe9t\xe9")
    with pytest.raises(DataError, match=r"bad\.txt.*not UTF-8"):
        read_text_file(tmp_path / "bad.txt")


def test_sentences_on_real_reports(real_data):
    annotation = json.loads((real_data / "iu_xray" / "annotation.json").read_text())
    texts = [e["report"] for entries in annotation.values() for e in entries]
    texts += [r["Description"]["Caption"] for r in json.loads((real_data / "medpix2" / "Descriptions.json").read_text())]
    assert len(texts) > 4000
    for text in texts:
        sentences = split_sentences(text)
        assert sentences, text
        assert all(s.strip() and any(c.isalnum() for c in s) and s == s.strip() for s in sentences), text
        assert _words(" ".join(sentences)) == _words(text), text


def _manifest_tree(tmp_path: Path) -> Path:
    for name in ("a.png", "b.png", "c.png"):
        _png(tmp_path / "img" / name)
    return tmp_path


def test_manifest_csv_and_jsonl(tmp_path):
    root = _manifest_tree(tmp_path)
    with open(root / "m.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["images", "report", "label", "split", "study", "patient"])
        writer.writerow(["img/a.png; img/b.png", "Line one.\nLine two.", "normal", "train", "s1", "p1"])
        writer.writerow(["img/c.png", "Clear.", "", "test", "", "p2"])
    rows = read_image_text_manifest(root / "m.csv")
    assert rows[0].images == (str(root / "img/a.png"), str(root / "img/b.png"))
    assert rows[0].report == "Line one.\nLine two." and rows[0].label == "normal" and rows[0].patient == "p1"
    assert rows[1].study == "row2" and rows[1].label is None and rows[1].split == "test"
    lines = [{"images": ["img/a.png", "img/b.png"], "report": "A.", "label": 1, "study": 7},
             {"path": "img/c.png", "report": "B."}]
    (root / "m.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    rows = read_image_text_manifest(root / "m.jsonl")
    assert [len(r.images) for r in rows] == [2, 1] and rows[0].study == "7" and rows[0].label == 1


@pytest.mark.parametrize(
    "records, match",
    [
        ([{"images": "img/a.png"}], r"row 1 .*no 'report'"),
        ([{"images": "img/a.png", "report": "  "}], r"row 1 .*empty 'report'"),
        ([{"images": "img/a.png", "report": ["x"]}], r"row 1 .*'report' must be text"),
        ([{"images": "img/a.png", "report": "x"}, {"images": "img/zz.png", "report": "y"}], r"row 2 .*img/zz.png.*does not exist"),
        ([{"images": [], "report": "x"}], r"row 1 .*no images"),
        ([{"images": "img/a.png", "report": "x", "study": "s"}, {"images": "img/b.png", "report": "y", "study": "s"}],
         r"row 2 .*study 's' also in row 1"),
        ([{"images": "img/a.png", "report": "x", "study": "s", "split": "train"},
          {"images": "img/b.png", "report": "y", "study": "s", "split": "test"}], r"'train' and 'test': a leak"),
        ([{"images": "img/a.png", "report": "x", "patient": "p", "split": "train"},
          {"images": "img/b.png", "report": "y", "patient": "p", "split": "val"}], r"row 2 .*patient 'p' is in splits 'train'.*'val'"),
    ],
)
def test_manifest_bad_rows(tmp_path, records, match):
    root = _manifest_tree(tmp_path)
    (root / "m.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    with pytest.raises(DataError, match=match) as info:
        read_image_text_manifest(root / "m.jsonl")
    assert info.value.where == str(root / "m.jsonl")


def test_manifest_csv_bad_columns(tmp_path):
    (tmp_path / "m.csv").write_text("file,report\na.png,x\n")
    with pytest.raises(DataError, match="no 'images' or 'path' column"):
        read_image_text_manifest(tmp_path / "m.csv")


def _mimic_tree(root: Path) -> Path:
    study = root / "files" / "p10" / "p10000032" / "s50414267"
    _png(study / "d1.jpg", 90)
    _png(study / "d2.png")
    study.with_suffix(".txt").write_text(MIMIC_REPORT)
    other = root / "files" / "p10" / "p10000033" / "s50000001"
    _png(other / "d3.png")
    other.with_suffix(".txt").write_text("Lungs are clear.")
    return root


def test_mimic_cxr_pairs(tmp_path):
    root = _mimic_tree(tmp_path)
    rows, report = mimic_cxr_pairs(root)
    assert [r.study for r in rows] == ["s50414267", "s50000001"] and {r.split for r in rows} == {"train"}
    assert [Path(p).name for p in rows[0].images] == ["d1.jpg", "d2.png"] and rows[0].patient == "p10000032"
    assert rows[0].report == report_text(MIMIC_REPORT) and rows[1].report == "Lungs are clear."
    eval_item = ImageTextDataset(rows, train=False)[0]
    assert eval_item["images"].shape == (2, 1, 8, 8)
    with gzip.open(root / "mimic-cxr-2.0.0-split.csv.gz", "wt") as fh:
        fh.write("dicom_id,study_id,subject_id,split\nd1,50414267,10000032,train\nd2,50414267,10000032,train\n")
    rows, report = mimic_cxr_pairs(root)
    assert [r.study for r in rows] == ["s50414267"] and report["unsplit"] == 1
    (root / "files" / "p10" / "p10000034" / "s50000002").mkdir(parents=True)
    (root / "files" / "p10" / "p10000034" / "s50000002.txt").write_text("FINDINGS: ok")
    (root / "mimic-cxr-2.0.0-split.csv.gz").unlink()
    with pytest.raises(DataError, match="study s50000002: no images"):
        mimic_cxr_pairs(root)
    rows, report = mimic_cxr_pairs(root, skip_bad=True)
    assert len(rows) == 2 and report["skipped"] == {"no images": 1} and report["examples"]["no images"] == ["s50000002"]


def test_mimic_cxr_split_leaks(tmp_path):
    root = _mimic_tree(tmp_path)
    (root / "mimic-cxr-2.0.0-split.csv").write_text("dicom_id,study_id,subject_id,split\nd1,50414267,1,train\nd2,50414267,1,test\n")
    with pytest.raises(DataError, match=r"s50414267 is in splits 'train' and 'test'"):
        mimic_cxr_pairs(root)
    (root / "files" / "p10" / "p10000032" / "s50000009.txt").write_text("Clear.")
    _png(root / "files" / "p10" / "p10000032" / "s50000009" / "x.png")
    (root / "mimic-cxr-2.0.0-split.csv").write_text("dicom_id,study_id,subject_id,split\nd1,50414267,1,train\nx,50000009,1,test\n")
    with pytest.raises(DataError, match=r"patient 'p10000032' is in splits"):
        mimic_cxr_pairs(root)


def test_iu_xray_pairs(tmp_path):
    images = tmp_path / "images"
    for study in ("CXR1_IM-1", "CXR2_IM-2"):
        _png(images / study / "0.png")
        _png(images / study / "1.png")
    entry = lambda study, split: {"id": study, "report": "Heart normal. Lungs clear.", "split": split,  # noqa: E731
                                  "image_path": [f"{study}/0.png", f"{study}/1.png"]}
    data = {"train": [entry("CXR1_IM-1", "train")], "test": [entry("CXR2_IM-2", "test")], "val": [entry("CXR3_IM-3", "val")]}
    (tmp_path / "annotation.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"study CXR3_IM-3: image file is missing"):
        iu_xray_pairs(tmp_path / "annotation.json", images)
    rows, report = iu_xray_pairs(tmp_path / "annotation.json", images, skip_bad=True)
    assert [(r.study, r.split, len(r.images)) for r in rows] == [("CXR1_IM-1", "train", 2), ("CXR2_IM-2", "test", 2)]
    assert report["skipped"] == {"image file is missing": 1}
    data["val"] = [entry("CXR3_IM-3", "train")]
    (tmp_path / "annotation.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match="listed under 'val' but its 'split' is 'train'"):
        iu_xray_pairs(tmp_path / "annotation.json", images)


def test_medpix2_pairs_real(real_data):
    rows, report = medpix2_pairs(real_data / "medpix2")
    assert set(report["studies"]) == {"train", "dev"} and report["skipped"] == {}
    cases = {split: {r.patient for r in rows if r.split == split} for split in ("train", "dev")}
    assert cases["train"] and cases["dev"] and not cases["train"] & cases["dev"]
    assert all(r.report.strip() and Path(r.images[0]).is_file() for r in rows)
    with pytest.raises(DataError, match="no findings text"):
        medpix2_pairs(real_data / "medpix2", field="findings")
    rows, report = medpix2_pairs(real_data / "medpix2", field="findings", skip_bad=True)
    assert report["skipped"]["no findings text"] > 0 and len(rows) + report["skipped"]["no findings text"] == 1850



def test_medpix2_joined_fields(tmp_path):
    """caption+findings: one text of both paragraphs, caption first; sentences of both."""
    root = write_example_tree(tmp_path / "mp", (2, 1), 2)
    rows, report = medpix2_pairs(root, field="caption+findings")
    captions = {r.study: r.report for r in medpix2_pairs(root, field="caption")[0]}
    findings = {r.study: r.report for r in medpix2_pairs(root, field="findings")[0]}
    assert len(rows) == len(captions) and report["skipped"] == {}
    for r in rows:
        assert r.report == captions[r.study] + "\n\n" + findings[r.study]
        assert split_sentences(r.report) == split_sentences(captions[r.study]) + split_sentences(findings[r.study])
    with pytest.raises(DataError, match="abstract"):
        medpix2_pairs(root, field="caption+abstract")


def test_medpix2_joined_fields_real(real_data):
    """A row needs every field: images of cases without findings are bad rows, counted under skip_bad."""
    with pytest.raises(DataError, match="no findings text"):
        medpix2_pairs(real_data / "medpix2", field="caption+findings")
    rows, report = medpix2_pairs(real_data / "medpix2", field="caption+findings", skip_bad=True)
    assert report["skipped"] == {"no findings text": 1850 - len(rows)}
    assert sum(len(split_sentences(r.report)) for r in rows) > 2 * len(rows)

def _study_rows(tmp_path: Path) -> list[ImageTextRow]:
    paths = tuple(str(_png(tmp_path / f"v{v}.png", v)) for v in (10, 20, 30))
    other = (str(_png(tmp_path / "w.png", 40, (6, 6))),)
    return [ImageTextRow(paths, "Heart normal. Lungs clear.", "s1", "train", "p1", "normal"),
            ImageTextRow(other, "Effusion.", "s2", "test", "p2", "effusion")]


def test_packed_rows_give_back_the_rows(tmp_path):
    """The dataset keeps its rows as bytes (a forked worker then copies none of them) and gives
    back equal rows: by index, negative index and slice; past the end is an IndexError."""
    rows = _study_rows(tmp_path)
    packed = PackedRows(rows)
    assert len(packed) == 2 and list(packed) == rows and packed[-1] == rows[1] and packed[0:1] == rows[:1]
    with pytest.raises(IndexError):
        packed[2]
    dataset = ImageTextDataset(rows, split="test")
    assert isinstance(dataset.rows, PackedRows) and list(dataset.rows) == rows[1:] and len(PackedRows([])) == 0


def test_dataset_train_draws_and_eval(tmp_path):
    rows = _study_rows(tmp_path)
    none = Preprocess(intensity="none")
    ds = ImageTextDataset(rows, none, split="train")
    drawn = [int(ds[0]["image"].max()) for _ in range(40)]
    assert set(drawn) == {10, 20, 30}
    again = ImageTextDataset(rows, none, split="train")
    assert [int(again[0]["image"].max()) for _ in range(40)] == drawn
    firsts = {int(ImageTextDataset(rows, none, split="train", seed=s)[0]["image"].max()) for s in range(16)}
    assert len(firsts) > 1
    item = ds[0]
    assert item["sentences"] == ["Heart normal.", "Lungs clear."] and item["study"] == "s1" and int(item["label"]) == 1
    batch = collate_image_text([item, ImageTextDataset(rows, none, split="train", seed=3)[0]])
    assert batch["image"].shape == (2, 1, 8, 8) and batch["text"][0] == "Heart normal. Lungs clear."
    assert torch.equal(batch["spacing"], torch.ones(2, 2))  # PNGs: 1 mm assumed
    evals = ImageTextDataset(rows, Preprocess(intensity="none", size=8), train=False)
    assert [float(v) for v in evals[0]["images"].amax(dim=(1, 2, 3))] == [10.0, 20.0, 30.0]
    batch = collate_image_text([evals[0], evals[1]])
    assert batch["images"].shape == (4, 1, 8, 8) and batch["image_study"].tolist() == [0, 0, 0, 1]
    assert batch["spacing"].shape == (4, 2) and torch.allclose(batch["spacing"][3], torch.tensor([0.75, 0.75]))  # 6 px -> 8
    assert torch.equal(batch["label"], torch.tensor([1, 0]))
    with pytest.raises(DataError, match="data.size"):
        collate_image_text([ImageTextDataset(rows, none)[0], ImageTextDataset(rows, none)[1]])
    with pytest.raises(DataError, match="no study has split 'val'"):
        ImageTextDataset(rows, split="val")
