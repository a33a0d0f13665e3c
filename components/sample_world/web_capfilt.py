"""Sample Web CapFilt: `ccs_synthetic_filtered_large.json` plus the pictures a user would download.

The release is a JSON list of {"url", "caption"} with no images (see shared/formats/web_capfilt.md).
The urls written here are made up under the reserved `.invalid` domain (never fetched); the
pictures are written where the adapter expects downloads: `images/<sha1(url)[:16]>.jpg`.
Captions imitate BLIP's synthetic ones: lower case, no final period.
"""

from __future__ import annotations

import hashlib

from components.sample_world import scene as scenes
from components.sample_world.coco_caption import scene_caption
from components.sample_world.world import SourceWriter

SOURCE = "web_capfilt"

SIDE = 128
ANNOTATION_FILE = "ccs_synthetic_filtered_large.json"
# url shapes of the three web sources (CC3M, CC12M, SBU), all on a reserved domain
URL_PATTERNS = (
    "http://sample-world.invalid/img/{:06d}.jpg",
    "https://cdn.sample-world.invalid/photos/{:08d}_z.jpg",
    "http://static.sample-world.invalid/{:05d}/large.jpg",
)


def _download_path(url: str) -> str:
    # the download layout the adapter documents; written out here, not imported, so the
    # round-trip test checks the adapter against an independent statement of it
    return f"images/{hashlib.sha1(url.encode('utf-8')).hexdigest()[:16]}.jpg"


def write(w: SourceWriter, n: int, faults: bool) -> None:
    """Write `n` caption records and their downloaded pictures."""
    records: list[dict] = []
    for i in range(n):
        url = w.rng.choice(URL_PATTERNS).format(100000 + i * 37)
        scene = scenes.random_scene(w.rng, 1, 4)
        w.write_scene(_download_path(url), scene, SIDE)
        records.append({"url": url, "caption": scene_caption(w.rng, scene).lower()})
    if faults:
        # a record whose url is not a string, and one whose downloaded file is not an image
        records.insert(2, {"url": 404, "caption": "a red circle on a gray background"})
        url = URL_PATTERNS[0].format(999999)
        w.write_corrupt_image(_download_path(url))
        records.append({"url": url, "caption": "a blue square on a teal background"})
    w.write_json(ANNOTATION_FILE, records)
