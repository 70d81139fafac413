"""Commitments bind everything that changes the test; published digests; secret strength."""

import json

import numpy as np
import pytest

from jaxwm import controls, triggers
from jaxwm.errors import CommitmentError, ManifestError, TriggerSetError
from jaxwm.manifest import (
    MAX_TRIGGERS,
    check_publication,
    publication_digest,
    read_manifest,
    regenerate,
    write_manifest,
)

SECRET = triggers.generate_secret()
SHAPE = (8, 8, 1)


def _source(n=40, k=10):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, *SHAPE), dtype=np.uint8), np.arange(n) % k


# Every committed parameter a claimant might edit in a manifest, with the edited value.
_EDITS = [
    ("num_classes", 1000),  # moves the chance level of a target set (the K-inflation probe)
    ("target_class", 3),
    ("label_policy", "random"),
    ("index", 1),
    ("size", 5),
    ("image_shape", [8, 8, 3]),
]


@pytest.mark.parametrize(("field", "value"), _EDITS)
def test_every_edit_of_a_committed_field_is_refused(tmp_path, field, value):
    ts = triggers.make_trigger_set(
        "noise", secret=SECRET, size=6, image_shape=SHAPE, num_classes=10,
        label_policy="target", target_class=1,
    )  # fmt: skip
    m = write_manifest(tmp_path / "m.json", ts)
    assert regenerate(m, secret=SECRET).commitment() == m["commitment"]
    edited = dict(m, **{field: value})
    with pytest.raises(CommitmentError):
        regenerate(edited, secret=SECRET)


def test_version1_manifests_still_verify_with_their_weaker_commitment(tmp_path):
    ts = triggers.make_trigger_set(
        "noise", secret=SECRET, size=6, image_shape=SHAPE, num_classes=10
    )
    v1 = {"version": 1, "kind": "noise", "size": 6, "image_shape": list(SHAPE),
          "num_classes": 10, "label_policy": "random", "index": 0,
          "commitment": ts.commitment(1)}  # fmt: skip
    path = tmp_path / "v1.json"
    path.write_text(json.dumps(v1))
    assert regenerate(read_manifest(path), secret=SECRET).commitment(1) == ts.commitment(1)
    with pytest.raises(ManifestError, match="version"):
        regenerate(dict(v1, version=7), secret=SECRET)


def test_source_digest_names_the_swapped_pool(tmp_path):
    src, lab = _source()
    ts = triggers.make_trigger_set(
        "content", secret=SECRET, size=6, image_shape=SHAPE, num_classes=10,
        source_images=src, source_labels=lab,
    )  # fmt: skip
    m = write_manifest(tmp_path / "m.json", ts)
    assert len(m["source_digest"]) == 64
    other = src.copy()
    other[-1, 0, 0, 0] ^= 1  # one pixel of an image that may not even be chosen
    with pytest.raises(CommitmentError, match="source images"):
        regenerate(m, secret=SECRET, source_images=other, source_labels=lab)


def test_manifest_size_is_bounded_before_allocation(tmp_path):
    ts = triggers.make_trigger_set("noise", secret=SECRET, size=2, image_shape=SHAPE, num_classes=3)
    m = write_manifest(tmp_path / "m.json", ts)
    path = tmp_path / "huge.json"
    path.write_text(json.dumps(dict(m, size=10**9)))
    with pytest.raises(ManifestError, match=str(MAX_TRIGGERS)):
        read_manifest(path)


def test_publication_digest_binds_the_manifests_in_order(tmp_path):
    sets = [
        triggers.make_trigger_set("noise", secret=SECRET, size=4, image_shape=SHAPE,
                                  num_classes=10, index=i)
        for i in range(2)
    ]  # fmt: skip
    ms = [write_manifest(tmp_path / f"m{i}.json", t) for i, t in enumerate(sets)]
    digest = publication_digest(ms)
    assert digest.startswith("jaxwm-wm2:") and len(digest) == len("jaxwm-wm2:") + 32
    check_publication(digest + "\n", ms)  # whitespace from a copy-paste is fine
    with pytest.raises(CommitmentError, match="published digest"):
        check_publication(digest, ms[::-1])
    with pytest.raises(CommitmentError):
        check_publication(publication_digest(ms[:1]), ms)


@pytest.mark.parametrize(
    ("secret", "ok"),
    [
        (triggers.generate_secret(), True),
        ("0123456789abcdef" * 2, True),  # 32 hex = 128 bits
        ("Zq3_xP9-Lm2vT8kW4nR6yB", True),  # 22 base64url characters = 132 bits
        ("0123456789abcdef0123456789abcde", False),  # 124 bits
        ("my key", False),
        ("a" * 200, False),  # long but one repeated character
        ("Correct-Horse_Battery", False),  # 21 base64 characters = 126 bits
        (triggers.DEMO_SECRET, True),  # public and warned about, never refused
    ],
)
def test_embedding_secret_strength(secret, ok):
    if ok:
        triggers.check_secret_strength(secret)
    else:
        with pytest.raises(TriggerSetError, match="generate_secret"):
            triggers.check_secret_strength(secret)


def test_controls_are_fresh_draws_of_the_same_generator():
    src, lab = _source(200)
    for kind, kw in [("noise", {}), ("content", {"source_images": src, "source_labels": lab})]:
        ts = triggers.make_trigger_set(kind, secret=SECRET, size=8, image_shape=SHAPE,
                                       num_classes=10, label_policy="target", target_class=2,
                                       **kw)  # fmt: skip
        ctl = controls.control_sets(ts.params, SECRET, count=3, **kw)
        assert len(ctl) == 3 and all(len(c) == 8 and c.kind == kind for c in ctl)
        assert all((c.labels == 2).all() for c in ctl)  # same policy and target
        images = {ts.images.tobytes(), *(c.images.tobytes() for c in ctl)}
        assert len(images) == 4  # fresh keys: other images
        again = controls.control_sets(ts.params, SECRET, count=3, **kw)
        assert all(np.array_equal(a.images, b.images) for a, b in zip(ctl, again, strict=True))
        other_seed = controls.control_sets(ts.params, SECRET, count=1, seed="court", **kw)
        assert not np.array_equal(other_seed[0].images, ctl[0].images)
    assert controls.control_sets({"kind": "folder"}, SECRET) == []


def test_control_sets_hash_the_source_pool_once_and_equal_sets_built_alone(monkeypatch):
    # 1,000 content control sets hashed the whole pool 1,000 times (137 s of a study unit).
    src, lab = _source(200)
    ts = triggers.make_trigger_set("content", secret=SECRET, size=8, image_shape=SHAPE,
                                   num_classes=10, source_images=src, source_labels=lab)  # fmt: skip
    calls = []
    real = triggers.source_digest
    monkeypatch.setattr(triggers, "source_digest", lambda *a: calls.append(1) or real(*a))
    ctl = controls.control_sets(ts.params, SECRET, count=5, source_images=src, source_labels=lab)
    assert len(calls) == 1
    for j, c in enumerate(ctl):
        alone = triggers.make_trigger_set(
            "content", secret=controls.control_secret(SECRET, j), size=8, image_shape=SHAPE,
            num_classes=10, source_images=src, source_labels=lab,
        )  # fmt: skip
        assert c.params == alone.params and c.params["source_digest"] == real(src, lab)
        assert np.array_equal(c.images, alone.images) and np.array_equal(c.labels, alone.labels)
    with pytest.raises(TriggerSetError, match="not one str"):
        triggers.make_trigger_sets("noise", keys=SECRET, size=2, image_shape=SHAPE, num_classes=10)


def test_query_plan_interleaves_and_splits_back():
    sets = [triggers.make_trigger_set("noise", secret=SECRET, size=5, image_shape=SHAPE,
                                      num_classes=10, index=i) for i in range(2)]  # fmt: skip
    ctl = [controls.control_sets(t.params, SECRET, count=2) for t in sets]
    plan = controls.query_plan(sets, ctl, SECRET)
    assert len(plan.images) == 2 * 5 * 3
    # An "answer" that is the query position: split must route every position exactly once.
    owner, control = plan.split(np.arange(len(plan.images)))
    seen = np.concatenate([*owner, *control])
    assert sorted(seen.tolist()) == list(range(30))
    for i, ts in enumerate(sets):
        assert np.array_equal(plan.images[owner[i]], ts.images)
        assert np.array_equal(plan.images[control[i]],
                              np.concatenate([c.images for c in ctl[i]]))  # fmt: skip
        assert np.array_equal(plan.control_labels[i], np.concatenate([c.labels for c in ctl[i]]))
    # The order is keyed: the owner's triggers are not simply first.
    assert owner[0].tolist() != list(range(5))
    with pytest.raises(TriggerSetError, match="answers"):
        plan.split(np.zeros(3))
