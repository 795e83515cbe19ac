"""The look inside a model (bharateo.training.inspect_model) and the exports (bharateo.storage.export)."""
from __future__ import annotations

import csv
import io
import json
import zipfile

import numpy as np
import pytest
import torch

from bharateo.training import inspect_model as im
from bharateo.data.chips import ChipConfig, ChipSet, patch_mode_labels
from bharateo.errors import ConfigError, RunNotFoundError
from bharateo.storage.export import csv_bytes, run_archive
from bharateo.models.notebook import ModelConfig, random_patch_mask
from bharateo.training.experiment import RunConfig
from bharateo.storage.runs import load_run, save_run
from bharateo.training.loop import make_model
from bharateo.data.worldcover import IGNORE_INDEX, NODATA_ID


def block_chips(k: int = 6, size: int = 64, patch: int = 16, seed: int = 0) -> ChipSet:
    """k chips of patch-aligned class blocks (some patches no-data), classes 0-7 drawn at random."""
    rng = np.random.default_rng(seed)
    g = size // patch
    blocks = rng.integers(0, 8, size=(k, g, g)).astype(np.uint8)
    blocks[0, 0, 0] = NODATA_ID
    labels = np.kron(blocks, np.ones((patch, patch), dtype=np.uint8))
    return ChipSet(labels, patch_mode_labels(labels, patch), np.zeros(k, np.int64),
                   np.zeros((k, 2), np.int64), ["fixture"], size, patch)


def tiny_model(chips: ChipSet, depth: int = 2, heads: int = 2):
    return make_model(ModelConfig(img_size=chips.chip_size, patch_size=chips.patch_size,
                                  embed_dim=16, depth=depth, heads=heads), seed=3)


def test_attention_rows_sum_to_one_for_every_query_layer_and_head():
    chips = block_chips()
    model = tiny_model(chips, depth=2, heads=2)
    maps = im.attention_maps(model, chips, 1, 0.75)
    n = chips.grid_size ** 2
    assert maps.weights.shape == (2, 2, n, n)
    assert maps.layers == ["encoder layer 1", "encoder layer 2"]
    assert maps.queries.all()  # the notebook's encoder computes every token, hidden ones too
    np.testing.assert_allclose(maps.weights.sum(axis=-1), 1.0, atol=1e-5)
    assert (maps.weights >= 0).all()
    # the mask is the one Reconstruct uses for that chip: same seed, same ratio
    expected = random_patch_mask(1, n, 0.75, torch.Generator().manual_seed(0)).reshape(4, 4)
    assert (maps.mask == expected.numpy()).all()
    assert maps.grid(1, None, 5).shape == (4, 4)
    np.testing.assert_allclose(maps.grid(1, None, 5).sum(), 1.0, atol=1e-5)


def test_attention_weights_are_the_ones_forward_uses():
    """Recomputing a layer's output from the reported weights gives forward()'s output."""
    chips = block_chips()
    model = tiny_model(chips, depth=1, heads=2).eval()
    tokens = chips.tokens([2])
    mask = random_patch_mask(1, 16, 0.5, torch.Generator().manual_seed(1))
    weights = model.attention_weights(tokens, mask)["weights"][0]  # B x H x N x N
    layer = model.encoder.layers[0]
    with torch.no_grad():
        z = model.embed(tokens, mask)
        h = layer.norm1(z)
        d = h.shape[-1]
        v = torch.nn.functional.linear(h, layer.self_attn.in_proj_weight,
                                       layer.self_attn.in_proj_bias)[..., 2 * d:]
        v = v.reshape(1, 16, 2, d // 2).transpose(1, 2)
        attended = layer.self_attn.out_proj((weights @ v).transpose(1, 2).reshape(1, 16, d))
        z1 = z + attended
        z1 = z1 + layer.linear2(torch.nn.functional.gelu(layer.linear1(layer.norm2(z1))))
        pred, _ = model(tokens, mask)
    torch.testing.assert_close(model.pixel_head(z1), pred)


def test_attention_bad_requests_say_what_to_do():
    chips = block_chips()
    model = tiny_model(chips)
    with pytest.raises(ConfigError, match="no chip 6"):
        im.attention_maps(model, chips, 6, 0.75)
    with pytest.raises(ConfigError, match="strictly between 0 and 1"):
        im.attention_maps(model, chips, 0, 1.0)
    other = block_chips(size=32, patch=8)
    with pytest.raises(ConfigError, match="doesn't match"):
        im.attention_maps(model, other, 0, 0.5)


def test_embedding_map_has_one_point_per_token_with_its_chip_token_and_label():
    chips = block_chips(k=7)
    model = tiny_model(chips)
    value = im.embedding_map(model, chips, neighbours=3)
    n = chips.grid_size ** 2
    assert value["chips"] == 7 and value["tokens_per_chip"] == n
    assert len(value["x"]) == len(value["y"]) == 7 * n
    labels = chips.patch_targets().numpy()
    for i in (0, 5, 7 * n - 1):
        c, t = value["chip"][i], value["token"][i]
        assert (c, t) == (i // n, i % n)
        assert value["label"][i] == labels[c, t]
    assert value["label"][0] == IGNORE_INDEX  # the no-data patch keeps its own label
    assert im.valid_embedding_map(json.loads(json.dumps(value)))
    # deterministic: same model and chips, same picture
    assert im.embedding_map(model, chips, neighbours=3) == value
    # the projection is PCA: the first axis carries at least as much variance as the second
    assert np.var(value["x"]) >= np.var(value["y"]) > 0
    assert value["explained"][0] >= value["explained"][1] > 0


def test_chips_like_this_one_ignore_what_every_chip_shares(monkeypatch):
    """A component common to every chip's embeddings (the same encoder made them all) changes
    neither the neighbours nor their similarities: cosines of raw means all read ~1.00."""
    chips = block_chips(k=7)
    model = tiny_model(chips)
    emb = im.token_embeddings(model, chips)
    value = im.embedding_map(model, chips, neighbours=3)
    monkeypatch.setattr(im, "token_embeddings", lambda *a, **k: emb + 50.0)  # a large shared part
    shifted = im.embedding_map(model, chips, neighbours=3)
    assert shifted["neighbours"] == value["neighbours"]
    np.testing.assert_allclose(shifted["similarity"], value["similarity"], atol=1e-4)
    assert min(min(row) for row in value["similarity"]) < 0.9  # the scores tell chips apart


def near_uniform_chips(k: int = 8, size: int = 64, patch: int = 16) -> ChipSet:
    """The sample's kind of chips: all tree, one water patch each (at a different token)."""
    g = size // patch
    blocks = np.zeros((k, g, g), np.uint8)  # 0: tree
    for i in range(k):
        blocks[i].ravel()[(3 * i + 1) % (g * g)] = 5  # water
    labels = np.kron(blocks, np.ones((patch, patch), dtype=np.uint8))
    return ChipSet(labels, patch_mode_labels(labels, patch), np.zeros(k, np.int64),
                   np.zeros((k, 2), np.int64), ["fixture"], size, patch)


def test_chips_like_this_one_tell_near_uniform_chips_apart_and_say_why():
    """A teacher's report: on the sample's near-uniform chips every neighbour scored 1.000.
    Ranked by the clicked patch, the scores differ and each neighbour's nearest patch is named:
    a clicked water patch finds the other chips' water patches."""
    chips = near_uniform_chips()
    value = json.loads(json.dumps(im.embedding_map(tiny_model(chips), chips, neighbours=3)))
    assert im.valid_embedding_map(value)
    g = chips.grid_size
    water = int(np.flatnonzero(chips.patch_labels[0].ravel() == 5)[0])
    near = im.patch_neighbours(value, 0, water, k=5)
    assert len(near) == 5 and 0 not in [h["chip"] for h in near]
    assert all(h["label"] == 5 for h in near)  # alike because of their water patch
    assert all(chips.patch_labels[h["chip"]].ravel()[h["token"]] == 5 for h in near)
    scores = [h["similarity"] for h in near]
    assert scores == sorted(scores, reverse=True) and len({f"{x:.3f}" for x in scores}) == 5
    for h in near:
        assert h["similarity"] == pytest.approx((h["patch"] + h["whole"]) / 2)
    tree = 0 if water else 1
    on_tree = im.patch_neighbours(value, 0, tree, k=5)  # identical tree patches everywhere:
    assert all(h["label"] == 0 for h in on_tree)  # the whole chips tell them apart
    assert len({f"{h['similarity']:.3f}" for h in on_tree}) == 5
    assert im.patch_neighbours(value, 0, g * g) == [] and im.patch_neighbours(value, 99, 0) == []


def test_pca_matches_svd_up_to_sign():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 5)) * np.array([5.0, 3.0, 1.0, 0.5, 0.1])
    xy, explained = im.pca_2d(x)
    centred = x - x.mean(axis=0)
    u, s, vt = np.linalg.svd(centred, full_matrices=False)
    np.testing.assert_allclose(np.abs(xy), np.abs(centred @ vt[:2].T), atol=1e-9)
    np.testing.assert_allclose(explained, (s ** 2 / (s ** 2).sum())[:2], atol=1e-12)


def test_nearest_chips_by_cosine_never_include_the_chip_itself():
    vectors = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.0]])
    near, sim = im.nearest_chips(vectors, k=2)
    assert near[0].tolist() == [1, 2] and near[2].tolist() == [1, 0]
    assert all(i not in row for i, row in enumerate(near.tolist()))
    assert sim[0, 0] == pytest.approx(0.9 / np.hypot(0.9, 0.1))
    assert im.nearest_chips(vectors[:2], k=5)[0].shape == (2, 1)  # k cut to the other chips


@pytest.mark.parametrize("damage", [
    lambda v: v.update(x=v["x"][:-1]),
    lambda v: v.update(chip=[99] * len(v["chip"])),
    lambda v: v.update(neighbours="x"),
    lambda v: v.update(label=[1.5] * len(v["label"])),
])
def test_a_damaged_stored_map_is_not_valid(damage):
    chips = block_chips(k=3)
    value = im.embedding_map(tiny_model(chips), chips)
    damage(value)
    assert not im.valid_embedding_map(value)


def test_run_archive_holds_only_the_runs_own_files(tmp_path):
    chips = block_chips()
    config = RunConfig(chips=ChipConfig(chip_size=64, patch_size=16),
                       model=ModelConfig(embed_dim=16, depth=2, heads=2))
    path = save_run("zipme", make_model(config.model, 3), config.to_dict(), [], {})
    run = load_run("zipme")
    (path / "evaluation_abc.json").write_text("{}")
    (path / ".reserved").write_text("{}")  # markers and temporary files stay out
    (path / "notes.txt").write_text("x")
    (path / "sub").mkdir()
    (path / "link.json").symlink_to(tmp_path / "outside.json")
    (tmp_path / "outside.json").write_text("{\"secret\": 1}")
    with zipfile.ZipFile(io.BytesIO(run_archive(run))) as archive:
        names = sorted(archive.namelist())
        assert names == ["zipme/config.json", "zipme/evaluation_abc.json", "zipme/history.json",
                         "zipme/metrics.json", "zipme/model.pt"]
        assert archive.read("zipme/model.pt") == (path / "model.pt").read_bytes()
    for child in path.iterdir():
        child.unlink() if not child.is_dir() else child.rmdir()
    with pytest.raises(RunNotFoundError, match="no longer saved"):
        run_archive(run)


def test_csv_has_a_header_and_defuses_formulas():
    data = csv_bytes([{"a": 1, "b": "=HYPERLINK(1)"}, {"a": None, "b": "x"}])
    rows = list(csv.reader(io.StringIO(data.decode())))
    assert rows == [["a", "b"], ["1", "'=HYPERLINK(1)"], ["", "x"]]
    assert csv_bytes([], ["a"]) == b"a\n"


def test_chart_rows_for_the_csv_downloads():
    from bharateo.storage.export import HISTORY_COLUMNS, confusion_rows, series_rows

    series = [{"label": "a", "steps": [{"epoch": 1, "step": 1, "progress": 0.5, "loss": 2.0}],
               "epochs": [{"epoch": 1, "loss": 1.5, "heldout_esa_acc": 0.4}]},
              {"label": "b", "steps": [], "epochs": [{"epoch": 1, "loss": 1.0}]}]
    rows = series_rows(series)
    assert [(r["run"], r["kind"], r["loss"]) for r in rows] == [("a", "step", 2.0),
                                                              ("a", "epoch", 1.5), ("b", "epoch", 1.0)]
    assert rows[1]["progress"] == 1 and rows[1]["heldout_esa_acc"] == 0.4
    assert set(rows[0]) == set(HISTORY_COLUMNS)
    data = csv_bytes(rows, list(HISTORY_COLUMNS)).decode().splitlines()
    assert data[0].split(",") == list(HISTORY_COLUMNS) and len(data) == 4
    conf = confusion_rows({"confusion": [[3, 1], [0, 0]]}, ["tree", "water"])
    assert conf[0] == {"target": "tree", "predicted": "tree", "patches": 3, "share_of_target": 0.75}
    assert conf[3]["share_of_target"] is None  # no water patches: no share, not 0


def test_mae_variant_attention_on_the_grid_and_its_embedding_map():
    """The visible-only encoder's maps sit on the full grid (hidden rows and columns zero, its
    computed rows sum to 1); the decoder's cover every token; the map has one point per token."""
    chips = block_chips(k=4)
    model = make_model(ModelConfig(arch="mae", img_size=64, patch_size=16, embed_dim=16, depth=2,
                                   heads=2, decoder_dim=16, decoder_depth=1, decoder_heads=4), 3)
    maps = im.attention_maps(model, chips, 1, 0.75)
    hidden = maps.mask.ravel()
    assert maps.layers == ["encoder layer 1", "encoder layer 2", "decoder layer 1"]
    assert maps.layer_heads == [2, 2, 4] and maps.weights.shape == (3, 4, 16, 16)
    for li in range(2):  # encoder: visible queries only, never a hidden key
        assert (maps.queries[li] == ~hidden).all()
        w = maps.weights[li, :2]
        np.testing.assert_allclose(w[:, ~hidden].sum(-1), 1.0, atol=1e-5)
        assert (w[:, hidden] == 0).all() and (w[:, :, hidden] == 0).all()
        assert (maps.weights[li, 2:] == 0).all()  # padding heads
    assert maps.queries[2].all()
    np.testing.assert_allclose(maps.weights[2].sum(-1), 1.0, atol=1e-5)
    assert maps.grid(2, None, int(np.flatnonzero(hidden)[0])).sum() == pytest.approx(1.0, abs=1e-5)
    value = im.embedding_map(model, chips)
    assert len(value["x"]) == 4 * 16 and value["dim"] == 16
