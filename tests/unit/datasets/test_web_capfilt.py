import pytest

from components.datasets import HELD_IN, Example, Reject, SourceError
from components.datasets.web_capfilt import WebCapFiltAdapter, image_file_name

SBU_URL = "http://static.flickr.com/2723/4385058960_b0f291553e.jpg"
CDN_URL = "https://example-cdn.com/images/12345.jpg"


@pytest.fixture
def capfilt(raw_tree):
    raw_tree.write_json(
        "ccs_synthetic_filtered_large.json",
        [
            {"url": SBU_URL, "caption": "a wooden chair in the living room"},
            {"url": CDN_URL, "caption": " a dog running on the beach with a ball "},
            {"url": 12345, "caption": "a cat"},
            {"caption": "no url at all"},
            {"url": "http://x.invalid/1.jpg", "caption": ""},
        ],
    )
    return WebCapFiltAdapter(raw_tree.root)


def test_spec():
    (spec,) = WebCapFiltAdapter.datasets
    assert (spec.name, spec.category, spec.role, spec.splits, spec.eval_split, spec.task, spec.template_set) == (
        "web_capfilt", "image_captioning", HELD_IN, ("train",), None, "generate", "image_captioning"
    )


def test_downloaded_image_name_is_the_sha1_prefix_of_the_url():
    assert image_file_name(SBU_URL) == "3bb89933346b4f6d.jpg"
    assert image_file_name(CDN_URL) == "988ee8ff11b3b7e0.jpg"


def test_records_map_to_captions_and_downloaded_images(capfilt, raw_tree):
    good = [i for i in capfilt.read("web_capfilt", "train") if isinstance(i, Example)]
    assert [(e.key, e.source) for e in good] == [
        ("0", "ccs_synthetic_filtered_large.json#0"),
        ("1", "ccs_synthetic_filtered_large.json#1"),
    ]
    assert good[0].target == "a wooden chair in the living room"
    assert good[0].answers == ["a wooden chair in the living room"]
    assert good[0].image == raw_tree.path("images/3bb89933346b4f6d.jpg")
    assert good[1].target == "a dog running on the beach with a ball"
    assert good[1].slots == {} and good[1].choices == []


def test_image_root_holds_the_downloads(raw_tree, capfilt):
    adapter = WebCapFiltAdapter(raw_tree.root, image_root="memory://downloads/")
    first = next(iter(adapter.read("web_capfilt", "train")))
    assert first.image == "memory://downloads/images/3bb89933346b4f6d.jpg"


def test_bad_records_become_rejects_with_reasons(capfilt):
    rejects = {r.key: r for r in capfilt.read("web_capfilt", "train") if isinstance(r, Reject)}
    assert sorted(rejects) == ["2", "3", "4"]
    assert "'url' is int" in rejects["2"].reason and rejects["2"].source == "ccs_synthetic_filtered_large.json#2"
    assert "missing field 'url'" in rejects["3"].reason
    assert "caption" in rejects["4"].reason


def test_only_a_train_split(capfilt):
    with pytest.raises(ValueError, match="train"):
        list(capfilt.read("web_capfilt", "val"))


def test_missing_annotation_file_names_the_path(raw_tree):
    raw_tree.write_text("README.txt", "the annotation file is not here")
    with pytest.raises(SourceError, match="ccs_synthetic_filtered_large.json"):
        list(WebCapFiltAdapter(raw_tree.root).read("web_capfilt", "train"))


def test_a_file_that_is_not_a_list_is_a_source_error(raw_tree):
    raw_tree.write_json("ccs_synthetic_filtered_large.json", {"url": SBU_URL, "caption": "x"})
    with pytest.raises(SourceError, match="not a JSON list"):
        list(WebCapFiltAdapter(raw_tree.root).read("web_capfilt", "train"))
