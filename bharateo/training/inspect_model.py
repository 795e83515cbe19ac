"""A look inside a trained model: attention maps and the token-embedding map.

- Attention: for one chip and a seeded mask, the softmax weights of every layer and head
  (query token x key token over the G x G grid), from the variant's own
  `attention_weights(tokens, mask)` (see bharateo/models/registry.py). A variant whose encoder sees
  only the visible tokens reports the rows and columns of the hidden ones as zeros and says which
  queries each layer computed (`queries`); every computed row sums to 1.
- Embedding map: the encoder's output for every token of a chip set with nothing hidden
  (`token_embeddings(tokens)`), projected to 2-D by PCA (principal components of the centred
  embeddings, from the D x D covariance: no new dependency, deterministic), one point per token
  with its chip, token index and patch label; and "chips like this one" for a clicked patch
  (patch_neighbours): ranked by the mean of two cosines of embeddings centred on the mean over
  every token (on their first PATCH_COMPONENTS principal components): their patch nearest to the
  clicked one, and their whole chip.
  A chip's mean embedding can't rank the sample's near-uniform chips (all ~97 % tree): averaging
  64 tokens leaves every such chip at ~1.000; single patches keep what tells them apart.

Nothing here imports Streamlit; the app stores the map beside a run (app results) and draws it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from bharateo.training import evaluate as ev
from bharateo.data.chips import ChipSet
from bharateo.errors import ConfigError
from bharateo.models.device import autocast, model_device
from bharateo.models.notebook import check_mask_ratio, random_patch_mask
from bharateo.data.worldcover import CLASS_NAMES, IGNORE_INDEX

NEIGHBOURS = 5  # "chips like this one": how many nearest chips are kept per chip
PATCH_COMPONENTS = 16  # principal components kept per token for patch_neighbours
EMBED_BATCH = 128  # chips per forward pass when embedding a chip set


@dataclass
class AttentionMaps:
    """One chip's attention, every layer and head.

    weights: L x H x N x N float32 (query row, key column; a computed row sums to 1)
    queries: L x N bool, the query tokens each layer computed (False rows are all zero)
    layers:  L names ("encoder layer 1", ...)
    mask:    G x G bool, the hidden patches (True = hidden)
    layer_heads: L head counts (a decoder may have fewer heads than the encoder: heads past a
             layer's count are zero padding)
    """

    weights: np.ndarray
    queries: np.ndarray
    layers: list[str]
    mask: np.ndarray
    layer_heads: list[int] | None = None

    def __post_init__(self):
        if self.layer_heads is None:
            self.layer_heads = [self.weights.shape[1]] * len(self.layers)

    @property
    def heads(self) -> int:
        """The most heads any layer has."""
        return self.weights.shape[1]

    @property
    def grid_size(self) -> int:
        return self.mask.shape[0]

    def is_encoder(self, layer: int) -> bool:
        """Whether `layer` is an encoder layer (the variants name theirs "encoder layer i" and
        "decoder layer i", bharateo/models/registry.py)."""
        return self.layers[layer].startswith("encoder")

    def sees_hidden(self, layer: int) -> bool:
        """Whether `layer` computed the hidden patches too (the notebook's encoder, as mask
        tokens; a decoder), not only the visible ones (an `mae` encoder)."""
        return bool(self.queries[layer][self.mask.ravel()].all())

    def grid(self, layer: int, head: int | None, query: int) -> np.ndarray:
        """G x G weights that token `query` gives every patch in `layer` (`head` None: the mean
        over that layer's heads). All zeros when that layer did not compute this query or has no
        such head."""
        real = self.layer_heads[layer]
        w = self.weights[layer, :real, query] if head is None else self.weights[layer, head, query][None]
        g = self.grid_size
        return w.mean(axis=0).reshape(g, g)


def _require(model, method: str) -> None:
    if not callable(getattr(model, method, None)):
        name = getattr(getattr(model, "config", None), "arch", type(model).__name__)
        raise ConfigError(f"The model variant '{name}' can't show {method.replace('_', ' ')} yet: "
                          "pick a run of another variant.")


@torch.no_grad()
def attention_maps(model, chips: ChipSet, index: int, mask_ratio: float,
                   seed: int = ev.EVAL_MASK_SEED, precision: str = "fp32") -> AttentionMaps:
    """Attention of chip `index` under the seeded mask Reconstruct uses (the first mask `seed`
    draws on the CPU, as evaluate.masked_batches: the hidden patches are the ones the Reconstruct
    page hides), on the model's device under `precision`.

    Raises ConfigError: the run doesn't fit the chips, a ratio outside (0, 1), an index outside
    the chip set, or a variant without `attention_weights`.
    """
    ev.check_compatible(model, chips)
    check_mask_ratio(mask_ratio)
    if not 0 <= index < len(chips):
        raise ConfigError(f"There is no chip {index}: pick one from 0 to {len(chips) - 1}.")
    _require(model, "attention_weights")
    model.eval()
    g, device = chips.grid_size, model_device(model)
    mask = random_patch_mask(1, g * g, mask_ratio, torch.Generator().manual_seed(seed))
    with autocast(device, precision):
        out = model.attention_weights(chips.tokens([index]).to(device), mask.to(device))
    weights = out["weights"][:, 0].float().cpu().numpy()
    return AttentionMaps(weights=weights, queries=out["queries"][:, 0].cpu().numpy(),
                         layers=list(out["layers"]), mask=mask.reshape(g, g).numpy(),
                         layer_heads=list(out.get("heads") or [weights.shape[1]] * len(weights)))


def attention_rows(maps: AttentionMaps, query: int) -> list[dict]:
    """Every layer's and head's weights from token `query` to each patch, as table rows (the
    attention chart's CSV): layer, head, key token, key row/col on the grid, weight."""
    g = maps.grid_size
    rows = []
    for li, name in enumerate(maps.layers):
        if not maps.queries[li, query]:
            continue
        for h in range(maps.layer_heads[li]):
            for k, w in enumerate(maps.weights[li, h, query]):
                rows.append({"layer": name, "head": h + 1, "query_token": query, "key_token": k,
                             "key_row": k // g, "key_col": k % g, "weight": float(w)})
    return rows


@torch.no_grad()
def token_embeddings(model, chips: ChipSet, batch_size: int = EMBED_BATCH,
                     precision: str = "fp32") -> np.ndarray:
    """K x N x D float32: the encoder's output for every token of every chip, nothing hidden,
    in eval mode (deterministic), on the model's device under `precision`. Raises ConfigError
    if the run doesn't fit the chips or the variant has no `token_embeddings`."""
    ev.check_compatible(model, chips)
    _require(model, "token_embeddings")
    was_training, device = model.training, model_device(model)
    model.eval()
    try:
        parts = []
        for s in range(0, len(chips), batch_size):
            with autocast(device, precision):
                z = model.token_embeddings(chips.tokens(slice(s, s + batch_size)).to(device))
            parts.append(z.float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(parts).numpy()


def pca_components(x: np.ndarray, k: int) -> np.ndarray:
    """M x D points -> M x min(k, D) coordinates on their first k principal components (the
    centred points projected on the top eigenvectors of the D x D covariance, float64, each
    signed so its largest loading is positive)."""
    x = np.asarray(x, dtype=np.float64)
    centred = x - x.mean(axis=0)
    cov = centred.T @ centred / max(len(x) - 1, 1)
    _, vectors = np.linalg.eigh(cov)  # ascending
    top = vectors[:, ::-1][:, :min(k, x.shape[1])]
    top = top * np.sign(top[np.abs(top).argmax(axis=0), np.arange(top.shape[1])] + 1e-300)
    return centred @ top


def pca_2d(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """M x D points -> (M x 2 coordinates on the first two principal components, their shares
    of the total variance). Eigenvectors of the D x D covariance (float64), each signed so its
    largest loading is positive: the same embeddings always give the same picture."""
    x = np.asarray(x, dtype=np.float64)
    centred = x - x.mean(axis=0)
    cov = centred.T @ centred / max(len(x) - 1, 1)
    values, vectors = np.linalg.eigh(cov)  # ascending
    top = vectors[:, ::-1][:, :2]
    if top.shape[1] < 2:  # D == 1: a flat second axis
        top = np.concatenate([top, np.zeros((len(top), 2 - top.shape[1]))], axis=1)
    top = top * np.sign(top[np.abs(top).argmax(axis=0), [0, 1]] + 1e-300)
    total = float(values.sum())
    explained = values[::-1][:2] / total if total > 0 else np.zeros(2)
    return centred @ top, np.pad(explained, (0, 2 - len(explained)))


def nearest_chips(chip_vectors: np.ndarray, k: int = NEIGHBOURS) -> tuple[np.ndarray, np.ndarray]:
    """K x D chip vectors -> (K x k indices of the most cosine-similar other chips, best first;
    K x k similarities). Fewer than k other chips: k is cut to K - 1."""
    v = np.asarray(chip_vectors, dtype=np.float64)
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    sim = v @ v.T
    np.fill_diagonal(sim, -np.inf)
    k = min(k, len(v) - 1)
    order = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(sim, order, axis=1)


def embedding_map(model, chips: ChipSet, neighbours: int = NEIGHBOURS, precision: str = "fp32") -> dict:
    """The token-embedding map of `chips` as plain JSON (stored beside a run).

    -> {"x", "y": M floats (M = chips x tokens, chip-major: point i is chip i // N, token i % N),
    "chip", "token", "label": M ints (label: the patch label, IGNORE_INDEX for no-data),
    "explained": 2 variance shares, "tokens_per_chip": N, "chips": K, "dim": D,
    "neighbours" / "similarity": K x k nearest chips by the cosine of their mean embeddings over
    land-cover tokens (all tokens for a chip that has none), centred on the mean over these chips:
    every chip's tokens pass the same encoder and share a large common component, so raw cosines
    all read ~1.00 and tell chips apart by rounding only,
    "patch_vectors": M x P floats, every token's embedding centred on the mean over all M tokens
    and projected on its first P = min(PATCH_COMPONENTS, D) principal components (what
    patch_neighbours ranks by)}.
    """
    emb = token_embeddings(model, chips, precision=precision)  # K x N x D
    k, n, d = emb.shape
    xy, explained = pca_2d(emb.reshape(k * n, d))
    labels = chips.patch_targets().numpy()  # K x N
    land = (labels != IGNORE_INDEX)[..., None]
    counts = land.sum(axis=1)
    means = np.where(counts > 0, (emb * land).sum(axis=1) / np.maximum(counts, 1), emb.mean(axis=1))
    near, sim = nearest_chips(means - means.mean(axis=0, keepdims=True), neighbours)
    patches = pca_components(emb.reshape(k * n, d), PATCH_COMPONENTS)
    return {"x": np.round(xy[:, 0], 5).tolist(), "y": np.round(xy[:, 1], 5).tolist(),
            "patch_vectors": np.round(patches, 3).tolist(),
            "chip": np.repeat(np.arange(k), n).tolist(), "token": np.tile(np.arange(n), k).tolist(),
            "label": labels.reshape(-1).astype(int).tolist(),
            "explained": [float(e) for e in explained], "tokens_per_chip": n, "chips": k, "dim": d,
            "neighbours": near.tolist(), "similarity": np.round(sim, 5).tolist()}


def patch_neighbours(value: dict, chip: int, token: int, k: int = NEIGHBOURS) -> list[dict]:
    """"Chips like this one" for the clicked patch (`chip`, `token`) of an embedding_map, best
    first, as {"chip", "token" (its patch nearest to the clicked one), "label" (that patch's
    label), "patch" (their cosine), "whole" (the cosine of the two chips' mean vectors),
    "similarity" (the mean of the two: the rank)}. Cosines are of "patch_vectors" (token
    embeddings centred on the mean over every token): a chip's mean of them is its mean embedding
    centred on the set's. The patch part finds chips holding a patch like the clicked one (a
    water patch in a tree chip finds other water patches); the whole-chip part tells apart
    chips whose nearest patches are alike (uniform patches of one class differ only by their
    context). [] for a patch not in the map or a map without patch vectors."""
    n, chips = value.get("tokens_per_chip", 0), value.get("chips", 0)
    vectors = value.get("patch_vectors")
    if not (0 <= chip < chips and 0 <= token < n) or not vectors:
        return []

    def unit(x):
        return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)

    v = unit(np.asarray(vectors, dtype=np.float64).reshape(chips, n, -1))
    patch = v @ v[chip, token]  # chips x n
    best_token = patch.argmax(axis=1)
    best = patch[np.arange(chips), best_token]
    means = unit(np.asarray(vectors, dtype=np.float64).reshape(chips, n, -1).mean(axis=1))
    whole = means @ means[chip]
    score = (best + whole) / 2
    score[chip] = -np.inf
    order = np.argsort(-score, kind="stable")[:min(k, chips - 1)]
    return [{"chip": int(j), "token": int(best_token[j]),
             "label": int(value["label"][j * n + best_token[j]]), "patch": float(best[j]),
             "whole": float(whole[j]), "similarity": float(score[j])} for j in order]


def valid_embedding_map(value) -> bool:
    """A stored embedding map read back from disk has the shape embedding_map() writes
    (storage.results.EmbeddingMap; else it is computed again)."""
    from bharateo.errors import BharatEOError
    from bharateo.storage.results import EmbeddingMap
    from bharateo.untrusted import typed

    try:
        typed(EmbeddingMap, value, "embedding map")
    except BharatEOError:
        return False
    return True


def embedding_rows(value: dict) -> list[dict]:
    """The embedding map as table rows (its CSV): chip, token, patch label, pc1, pc2."""
    return [{"chip": c, "token": t, "patch_label": CLASS_NAMES[lab] if 0 <= lab < len(CLASS_NAMES)
             else "no-data", "pc1": x, "pc2": y}
            for x, y, c, t, lab in zip(value["x"], value["y"], value["chip"], value["token"],
                                       value["label"])]
