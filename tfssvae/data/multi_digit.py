"""Multi-digit canvases: 0..K digits at random places and sizes on a blank canvas.

The data of the multi-digit experiment of Siddharth et al. (2017) (after the multi-MNIST
of Eslami et al.'s AIR): a square canvas, 50x50 by default, holds ``count`` digits,
``count`` in ``0..K`` (``K = max_digits``, 3 by default, uniform by default), each a
digit image from any source ``tfssvae.data.load_source`` reads (the embedded 8x8 digits,
an ``idx:`` directory, a TFDS dataset), resized to a random side in ``digit_sizes``
pixels (20..28 by default, a float: sub-pixel sizes and places) and placed uniformly at
random wholly inside the canvas. Digits may overlap; overlaps are recorded.

Labels, padded to ``K`` slots; slots ``0..count-1`` hold the digits (in drawing order),
the others are absent (``present`` False, boxes and classes 0: absent slots are masked,
never a magic class)::

    "x":           float32 [batch, size, size, 1] in [0, 1]
    "count":       int32   [batch]              in 0..K
    "boxes":       float32 [batch, K, 4]        (y_min, x_min, y_max, x_max) in [0, 1]
    "classes":     int32   [batch, K]           the source's class of each digit
    "present":     bool    [batch, K]           slot k < count
    "overlap":     bool    [batch]              some pixel has ink (> 0) of two digits
    "box_overlap": float32 [batch, K, K]        pairwise box intersection areas, as a
                                                fraction of the canvas (0 on the
                                                diagonal and for absent slots)

A box is the footprint of the whole digit image (not the tight box of its ink), in the
``tf.image.draw_bounding_boxes`` convention: fractions of the canvas side, 0 the top or
left edge of the canvas and 1 the bottom or right edge. Its side is the digit's scale
(``(x_max - x_min) * size`` pixels) and its centre the digit's position;
``tfssvae.spatial.boxes_to_where`` turns boxes into the spatial transformer's ``where``,
under which ``read_glimpse`` reads the digit back.

Rendering: a digit fills exactly its box. The canvas pixel with centre ``p`` (pixels,
pixel ``i`` spans ``[i, i + 1]``) inside a box starting at ``b`` of side ``s`` samples the
``n x n`` digit bilinearly at ``(p - b) n / s - 1/2`` in its pixel indices (clamped to
the edge pixels), and pixels whose centres are outside every box are exactly 0. Rows and
columns are interpolated separately (the maps are axis-aligned), as two small matrix
products per digit, vectorised over the batch. Downscaling is not prefiltered: sizes
within 0.7x of a 28x28 MNIST digit alias very little.

Composition is a **clipped sum**, ``min(1, sum_k digit_k)``, by default; a pixelwise
``max`` is the alternative (``composition="max"``). The sum is the default because the
model of the experiment explains a canvas by the sum of its written digits: on a summed
canvas that model is exact wherever the strokes of two digits do not both saturate,
where a max would make every overlap a misfit. Both agree wherever digits do not
overlap, and both stay in [0, 1].

Randomness: ``MultiDigitComposer.sample(rng, batch_size)`` draws everything from one
``np.random.Generator``; the tf.data source seeds a generator per batch from
``(seed, batch_index)``, so a seed fixes the stream whatever the parallelism.

Besides the composer (``MultiDigitComposer``, ``compose``) the module gives a tf.data
source (``multi_digit_dataset``, ``MultiDigitSource``) and a TFDS builder
(``multi_digit_builder``, imported lazily because tensorflow_datasets is slow to
import).
"""
import functools
import os

import numpy as np
import tensorflow as tf

from tfssvae.data.pipeline import ProceduralSource, batch_indices
from tfssvae.data.validation import check_int

CANVAS_SIZE = 50
MAX_DIGITS = 3
DIGIT_SIZES = (20.0, 28.0)  # smallest and largest digit side, canvas pixels
COMPOSITIONS = ("sum", "max")

# Canvases rendered at once by the TFDS builder: each [chunk, K, size, size] float32
# temporary of the renderer takes 30 KiB per canvas at K = 3, size 50.
_CHUNK = 1024


# ------------------------------------------------------------------------------ checks

def check_counts(counts, max_digits, name="counts"):
    """Checks digit counts (labels or requests) against ``max_digits``.

    Args:
        counts: int array-like ``[batch]``, each in ``0..max_digits``.
        max_digits: ``K``, >= 1.
        name: the argument name to use in error messages.

    Returns:
        ``np.ndarray`` int32 ``[batch]``.

    Raises:
        ValueError: if ``counts`` is not an int vector or holds a count outside
            ``0..max_digits`` (the message gives the first such value and its index).
    """
    max_digits = check_int(max_digits, "max_digits", 1)
    array = np.asarray(counts)
    if array.ndim != 1:
        raise ValueError(f"{name} must have shape [batch]; received shape {array.shape}.")
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must hold integer counts; received dtype {array.dtype}.")
    outside = (array < 0) | (array > max_digits)
    if outside.any():
        index = int(np.flatnonzero(outside)[0])
        raise ValueError(
            f"{name} must be in 0..{max_digits} (max_digits); received {array[index]} at "
            f"index {index}.")
    return array.astype(np.int32)


def _check_digit_images(images, name="images"):
    """``[N, n, n]`` or ``[N, n, n, 1]`` digits in [0, 1] -> float32 ``[N, n, n]``."""
    array = np.asarray(images)
    if array.ndim == 4:
        if array.shape[-1] != 1:
            raise ValueError(
                f"{name} must be grey digits [num, side, side, 1]; received "
                f"{array.shape[-1]} channels (shape {array.shape}). Canvases are grey; "
                f"use a grey digit source (digits, MNIST, Fashion-MNIST).")
        array = array[..., 0]
    if array.ndim != 3 or array.shape[0] < 1:
        raise ValueError(f"{name} must have shape [num, side, side(, 1)] with num >= 1; "
                         f"received {array.shape}.")
    if array.shape[1] != array.shape[2]:
        raise ValueError(
            f"{name}: the digit source's images must be square; received "
            f"{array.shape[1]}x{array.shape[2]} (height x width).")
    if not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"{name} must be numeric; received dtype {array.dtype}.")
    array = array.astype(np.float32, copy=False)
    if not np.isfinite(array).all() or array.min() < 0.0 or array.max() > 1.0:
        raise ValueError(f"{name} must hold finite values in [0, 1]; received values in "
                         f"[{np.nanmin(array)}, {np.nanmax(array)}].")
    return array


def _check_digit_sizes(digit_sizes, canvas_size):
    """``(smallest, largest)`` side as floats with 1 <= smallest <= largest <= canvas."""
    try:
        low, high = (float(v) for v in digit_sizes)
    except (TypeError, ValueError):
        raise ValueError(f"digit_sizes must be a pair (smallest, largest) of sides in "
                         f"pixels; received {digit_sizes!r}.") from None
    if not 1.0 <= low <= high:
        raise ValueError(f"digit_sizes must satisfy 1 <= smallest <= largest; received "
                         f"{digit_sizes!r}.")
    if high > canvas_size:
        raise ValueError(
            f"canvas_size {canvas_size} is smaller than a digit: the largest digit side "
            f"(digit_sizes[1]) is {high:g} pixels; use canvas_size >= {int(np.ceil(high))}"
            f" or smaller digit_sizes.")
    return low, high


# --------------------------------------------------------------------------- rendering

def _interpolation_weights(starts, sides, digit_size, canvas_size):
    """Linear-interpolation matrices along one axis.

    Args:
        starts, sides: float ``[...]``: each box's first edge and side, in pixels.
        digit_size: ``n``, the digit's side in pixels.
        canvas_size: number of canvas pixels along the axis.

    Returns:
        float32 ``[..., canvas_size, n]``: row ``i`` holds the weights of the digit's
        pixels in canvas pixel ``i`` (two nonzero weights summing to 1 inside the box,
        all 0 outside it).
    """
    centres = np.arange(canvas_size, dtype=np.float64) + 0.5
    # Continuous digit coordinate in [0, n] across the box, then pixel-index coordinate.
    u = (centres - starts[..., None]) / sides[..., None] * digit_size
    inside = (u >= 0.0) & (u < digit_size)
    t = np.clip(u - 0.5, 0.0, digit_size - 1.0)  # clamp: the box is filled to its edge
    low = np.floor(t)
    frac = (t - low)[..., None]
    low = low.astype(np.int64)[..., None]
    high = np.minimum(low + 1, digit_size - 1)
    pixels = np.arange(digit_size)
    weights = (pixels == low) * (1.0 - frac) + (pixels == high) * frac
    return (weights * inside[..., None]).astype(np.float32)


def render_layers(digits, boxes, present, canvas_size):
    """Renders each digit alone on its own canvas.

    Args:
        digits: float32 ``[batch, K, n, n]`` in [0, 1].
        boxes: float ``[batch, K, 4]`` ``(y_min, x_min, y_max, x_max)`` in [0, 1].
        present: bool ``[batch, K]``; absent digits render as 0.
        canvas_size: the canvas side, pixels.

    Returns:
        float32 ``[batch, K, canvas_size, canvas_size]``.
    """
    present = np.asarray(present, bool)
    # Absent slots' boxes are zeros; give them a unit box so nothing divides by 0 (their
    # layers are zeroed below).
    boxes = np.where(present[..., None], np.asarray(boxes, np.float64),
                     [0.0, 0.0, 1.0, 1.0]) * canvas_size
    n = digits.shape[-1]
    rows = _interpolation_weights(boxes[..., 0], boxes[..., 2] - boxes[..., 0], n,
                                  canvas_size)
    cols = _interpolation_weights(boxes[..., 1], boxes[..., 3] - boxes[..., 1], n,
                                  canvas_size)
    # layer = rows @ digit @ cols^T, per digit: [H, n] [n, n] [n, W].
    layers = np.matmul(np.matmul(rows, digits), np.swapaxes(cols, -1, -2))
    return layers * present[..., None, None].astype(np.float32)


def compose(digits, boxes, present, canvas_size=CANVAS_SIZE, composition="sum"):
    """Composes digits at given boxes into canvases.

    Args:
        digits: float ``[batch, K, n, n]`` (or ``[..., 1]``) square digits in [0, 1].
        boxes: float ``[batch, K, 4]`` ``(y_min, x_min, y_max, x_max)`` in [0, 1] with
            ``y_max > y_min``, ``x_max > x_min`` for present digits.
        present: bool ``[batch, K]``.
        canvas_size: the canvas side, pixels, >= 1.
        composition: ``"sum"`` (clipped to 1) or ``"max"`` (see the module docstring).

    Returns:
        ``(canvases, overlap)``: float32 ``[batch, canvas_size, canvas_size, 1]`` in
        [0, 1], and bool ``[batch]``: whether some pixel has ink (> 0) of two digits.

    Raises:
        ValueError: on shapes that disagree, boxes outside [0, 1] or empty, or an
            unknown composition.
    """
    canvas_size = check_int(canvas_size, "canvas_size", 1)
    if composition not in COMPOSITIONS:
        raise ValueError(f"composition must be one of {COMPOSITIONS}; received "
                         f"{composition!r}.")
    digits = np.asarray(digits)
    if digits.ndim == 5 and digits.shape[-1] == 1:
        digits = digits[..., 0]
    if digits.ndim != 4:
        raise ValueError(f"digits must have shape [batch, K, n, n]; received "
                         f"{digits.shape}.")
    batch, slots = digits.shape[:2]
    _check_digit_images(digits.reshape((-1,) + digits.shape[2:]), name="digits")
    digits = digits.astype(np.float32, copy=False)
    boxes = np.asarray(boxes, np.float64)
    present = np.asarray(present, bool)
    if boxes.shape != (batch, slots, 4) or present.shape != (batch, slots):
        raise ValueError(
            f"boxes must have shape [batch, K, 4] = {(batch, slots, 4)} and present "
            f"[batch, K] = {(batch, slots)} to match digits {digits.shape}; received "
            f"{boxes.shape} and {present.shape}.")
    live = boxes[present]
    if live.size and (live.min() < 0.0 or live.max() > 1.0
                      or np.any(live[:, 2:] <= live[:, :2])):
        raise ValueError("boxes of present digits must lie in [0, 1] with y_max > y_min "
                         "and x_max > x_min.")
    layers = render_layers(digits, boxes, present, canvas_size)
    if composition == "sum":
        canvases = np.minimum(layers.sum(axis=1), 1.0)
    else:
        canvases = layers.max(axis=1, initial=0.0)
    overlap = ((layers > 0.0).sum(axis=1) >= 2).any(axis=(1, 2))
    return canvases[..., None].astype(np.float32), overlap


def box_overlaps(boxes, present):
    """Pairwise intersection areas of boxes.

    Args:
        boxes: ``[batch, K, 4]`` ``(y_min, x_min, y_max, x_max)`` in [0, 1].
        present: bool ``[batch, K]``.

    Returns:
        float32 ``[batch, K, K]``: the area both boxes cover, as a fraction of the
        canvas; 0 on the diagonal and in rows and columns of absent slots.
    """
    boxes = np.asarray(boxes, np.float64)
    present = np.asarray(present, bool)
    low = np.maximum(boxes[:, :, None, :2], boxes[:, None, :, :2])
    high = np.minimum(boxes[:, :, None, 2:], boxes[:, None, :, 2:])
    area = np.prod(np.clip(high - low, 0.0, None), axis=-1)
    both = present[:, :, None] & present[:, None, :] & ~np.eye(boxes.shape[1], dtype=bool)
    return (area * both).astype(np.float32)


# ---------------------------------------------------------------------------- composer

class MultiDigitComposer:
    """Draws random multi-digit canvases from a set of square grey digits.

    Args:
        images: float ``[num, n, n]`` or ``[num, n, n, 1]`` digits in [0, 1].
        labels: int ``[num]`` class of each digit.
        canvas_size: canvas side in pixels (default 50).
        max_digits: ``K``, the most digits on a canvas, >= 1 (default 3).
        digit_sizes: ``(smallest, largest)`` digit side in pixels, drawn uniformly
            (default ``(20, 28)``); the largest must fit on the canvas.
        composition: ``"sum"`` (clipped) or ``"max"``.
        count_probs: probabilities of the counts ``0..K`` (``K + 1`` values summing to
            1); uniform by default.

    Raises:
        ValueError: for non-square or multi-channel digits, ``max_digits < 1``, a canvas
            smaller than the largest digit, a bad composition or count distribution, or
            labels that do not match the images.
    """

    def __init__(self, images, labels, canvas_size=CANVAS_SIZE, max_digits=MAX_DIGITS,
                 digit_sizes=DIGIT_SIZES, composition="sum", count_probs=None):
        self.max_digits = check_int(max_digits, "max_digits", 1)
        self.canvas_size = check_int(canvas_size, "canvas_size", 1)
        self.images = _check_digit_images(images)
        self.digit_sizes = _check_digit_sizes(digit_sizes, self.canvas_size)
        labels = np.asarray(labels)
        if (labels.shape != (self.images.shape[0],)
                or not np.issubdtype(labels.dtype, np.integer)):
            raise ValueError(f"labels must be integers of shape [num] = "
                             f"{(self.images.shape[0],)}; received {labels.dtype} of "
                             f"shape {labels.shape}.")
        self.labels = labels.astype(np.int32)
        if composition not in COMPOSITIONS:
            raise ValueError(f"composition must be one of {COMPOSITIONS}; received "
                             f"{composition!r}.")
        self.composition = composition
        if count_probs is None:
            count_probs = np.full(self.max_digits + 1, 1.0 / (self.max_digits + 1))
        count_probs = np.asarray(count_probs, np.float64)
        if (count_probs.shape != (self.max_digits + 1,) or np.any(count_probs < 0)
                or not np.isclose(count_probs.sum(), 1.0)):
            raise ValueError(
                f"count_probs must be {self.max_digits + 1} non-negative probabilities "
                f"(of the counts 0..{self.max_digits}) summing to 1; received "
                f"{count_probs.tolist()}.")
        self.count_probs = count_probs

    @classmethod
    def from_source(cls, source, split="train", data_dir=None, **kwargs):
        """A composer of the digits of one split of a data source.

        Args:
            source: a ``tfssvae.data.DataSource`` or a spec for ``load_source``
                (``"digits"``, ``"idx:<directory>"``, ``"tfds:<name>"``).
            split: ``"train"`` or ``"test"``: test canvases from test digits keep every
                digit image on one side of the split.
            data_dir: TFDS data directory, for ``"tfds:"`` specs.
            **kwargs: the constructor's other arguments.
        """
        from tfssvae.data.sources import load_source  # pylint: disable=import-outside-toplevel
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test'; received {split!r}.")
        if isinstance(source, str):
            source = load_source(source, data_dir=data_dir)
        images = getattr(source, split + "_images")
        if images.shape[1] != images.shape[2]:
            raise ValueError(
                f"the digit source {source.name!r} has images of {images.shape[1]}x"
                f"{images.shape[2]} (height x width); multi-digit canvases need square "
                f"digits.")
        return cls(images, getattr(source, split + "_labels"), **kwargs)

    @property
    def canvas_shape(self):
        """``(canvas_size, canvas_size, 1)``."""
        return (self.canvas_size, self.canvas_size, 1)

    def sample(self, rng, batch_size, counts=None):
        """Draws a batch of canvases with their labels.

        Args:
            rng: a ``np.random.Generator`` or a seed for ``np.random.default_rng``.
            batch_size: canvases, >= 1.
            counts: optional int ``[batch_size]`` digit counts in ``0..K``; drawn from
                ``count_probs`` if None.

        Returns:
            dict of numpy arrays: the keys of the module docstring, plus ``"index"``:
            int32 ``[batch, K]``, the row of each digit in ``images`` (0 if absent).

        Raises:
            ValueError: on ``batch_size < 1`` or counts outside ``0..K``.
        """
        batch_size = check_int(batch_size, "batch_size", 1)
        if not isinstance(rng, np.random.Generator):
            rng = np.random.default_rng(rng)
        k, size = self.max_digits, self.canvas_size
        drawn = rng.choice(k + 1, size=batch_size, p=self.count_probs)
        if counts is None:
            counts = drawn.astype(np.int32)
        else:
            counts = check_counts(counts, k)
            if counts.shape != (batch_size,):
                raise ValueError(f"counts must have shape [batch_size] = {(batch_size,)};"
                                 f" received {counts.shape}.")
        # Every slot draws its numbers whether present or not, so the stream of a seed
        # does not depend on the counts.
        present = np.arange(k)[None, :] < counts[:, None]
        sides = rng.uniform(*self.digit_sizes, size=(batch_size, k))
        tops = rng.uniform(size=(batch_size, k)) * (size - sides)
        lefts = rng.uniform(size=(batch_size, k)) * (size - sides)
        index = rng.integers(0, self.images.shape[0], size=(batch_size, k))
        index = np.where(present, index, 0)
        boxes = np.stack([tops, lefts, tops + sides, lefts + sides], axis=-1) / size
        boxes = np.where(present[..., None], boxes, 0.0)
        canvases, overlap = compose(self.images[index], boxes, present, size,
                                    self.composition)
        return {
            "x": canvases,
            "count": counts,
            "boxes": boxes.astype(np.float32),
            "classes": np.where(present, self.labels[index], 0).astype(np.int32),
            "present": present,
            "overlap": overlap,
            "box_overlap": box_overlaps(boxes, present),
            "index": index.astype(np.int32),
        }


# --------------------------------------------------------------------------- tf.data

_DATASET_KEYS = ("x", "count", "boxes", "classes", "present", "overlap", "box_overlap")
_DATASET_TYPES = (tf.float32, tf.int32, tf.float32, tf.int32, tf.bool, tf.bool,
                  tf.float32)


def _batch_arrays(composer, seed, batch_index, batch_size):
    """The ``batch_index``-th batch of the stream of ``seed``, as a tuple (numpy side)."""
    # A generator per (seed, batch) keeps the stream independent of map parallelism.
    batch = composer.sample(np.random.default_rng([seed, int(batch_index)]), batch_size)
    return tuple(batch[key] for key in _DATASET_KEYS)


def multi_digit_dataset(composer, batch_size, seed, num_batches=None):
    """A tf.data source of freshly composed canvases.

    Args:
        composer: a ``MultiDigitComposer``.
        batch_size: canvases per batch, >= 1.
        seed: non-negative int; the same seed gives the same batches.
        num_batches: number of batches, or ``None`` for an endless stream.

    Returns:
        ``tf.data.Dataset`` of dicts with the keys and shapes of the module docstring
        (``"x"``, ``"count"``, ``"boxes"``, ``"classes"``, ``"present"``, ``"overlap"``,
        ``"box_overlap"``), batch dimension ``batch_size``.

    Raises:
        ValueError: on a composer of the wrong type, ``batch_size < 1``, a negative
            seed or ``num_batches < 1``.
    """
    if not isinstance(composer, MultiDigitComposer):
        raise ValueError(f"composer must be a MultiDigitComposer; received "
                         f"{type(composer).__name__}.")
    batch_size = check_int(batch_size, "batch_size", 1)
    seed = check_int(seed, "seed", 0)
    indices = batch_indices(num_batches)
    k = composer.max_digits
    shapes = ((batch_size,) + composer.canvas_shape, (batch_size,), (batch_size, k, 4),
              (batch_size, k), (batch_size, k), (batch_size,), (batch_size, k, k))

    def make_batch(batch_index):
        arrays = tf.numpy_function(
            lambda i: _batch_arrays(composer, seed, i, batch_size), [batch_index],
            list(_DATASET_TYPES), stateful=False)
        return {key: tf.ensure_shape(array, shape)
                for key, array, shape in zip(_DATASET_KEYS, arrays, shapes)}

    # deterministic=True keeps batch order fixed while batches compose in parallel.
    return (indices.map(make_batch, num_parallel_calls=tf.data.AUTOTUNE,
                        deterministic=True)
            .prefetch(tf.data.AUTOTUNE))


class MultiDigitSource(ProceduralSource):
    """Composed canvases as a batch source for ``training.train`` (``ProceduralSource``)."""

    def __init__(self, composer, batch_size, seed, steps_per_epoch=1000):
        if not isinstance(composer, MultiDigitComposer):
            raise ValueError(f"composer must be a MultiDigitComposer; received "
                             f"{type(composer).__name__}.")
        super().__init__(batch_size, seed, steps_per_epoch)
        self.composer = composer

    def dataset(self, seed, num_batches):
        return multi_digit_dataset(self.composer, self.batch_size, seed, num_batches=num_batches)


# ----------------------------------------------------------------------- TFDS builder

@functools.lru_cache(maxsize=None)
def multi_digit_builder():
    """Returns the TFDS builder class ``MultiDigitCanvases`` (imports TFDS on first use).

    Built once and cached (TFDS registers a builder by name when it is defined); also
    reachable as ``tfssvae.data.multi_digit.MultiDigitCanvases``.

    ``MultiDigitCanvases`` (dataset name ``multi_digit_canvases``, version 1.0.0)
    composes canvases with the class attributes' settings: digits from ``SOURCE``
    (``"digits"``: the embedded 8x8 digits, upscaled; any ``load_source`` spec,
    ``DATA_DIR`` for TFDS sources), ``CANVAS_SIZE`` 50, ``MAX_DIGITS`` 3,
    ``DIGIT_SIZES`` (20, 28), ``COMPOSITION`` "sum", ``SEED`` 0; ``NUM_EXAMPLES``
    canvases per split (train 20,000 from the source's training digits, test 5,000 from
    its test digits). Each example::

        {"image": uint8 (50, 50, 1), round(255 * x),
         "count": ClassLabel(K + 1),
         "boxes": float32 (K, 4), "classes": int32 (K,), "present": bool (K,),
         "overlap": bool}

    Subclass to change a setting; set ``MAX_EXAMPLES`` to generate only the first
    examples of each split.
    """
    # pylint: disable=import-outside-toplevel
    import tensorflow_datasets as tfds
    from etils import epath  # a dependency of tensorflow_datasets

    class MultiDigitCanvases(tfds.core.GeneratorBasedBuilder):
        """Canvases of 0..K digits composed by ``tfssvae.data.multi_digit``; no download
        (beyond that of a TFDS digit source)."""

        VERSION = tfds.core.Version("1.0.0")
        RELEASE_NOTES = {"1.0.0": "First release."}
        SOURCE = "digits"
        DATA_DIR = None
        CANVAS_SIZE = CANVAS_SIZE
        MAX_DIGITS = MAX_DIGITS
        DIGIT_SIZES = DIGIT_SIZES
        COMPOSITION = "sum"
        SEED = 0
        NUM_EXAMPLES = {"train": 20_000, "test": 5_000}
        MAX_EXAMPLES = None  # None: NUM_EXAMPLES
        # As for ProceduralSprites: pin the metadata directory so subclasses defined in
        # other modules (tests, scripts) work.
        pkg_dir_path = epath.Path(os.path.dirname(os.path.abspath(__file__)))

        def _info(self):
            k, size = self.MAX_DIGITS, self.CANVAS_SIZE
            features = tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(size, size, 1), dtype=np.uint8),
                "count": tfds.features.ClassLabel(num_classes=k + 1),
                "boxes": tfds.features.Tensor(shape=(k, 4), dtype=np.float32),
                "classes": tfds.features.Tensor(shape=(k,), dtype=np.int32),
                "present": tfds.features.Tensor(shape=(k,), dtype=np.bool_),
                "overlap": tfds.features.Scalar(dtype=np.bool_),
            })
            return self.dataset_info_from_configs(
                description=f"{size}x{size} canvases of 0..{k} digits from "
                f"{self.SOURCE!r} at random places and sizes; count, boxes, classes.",
                features=features,
                supervised_keys=("image", "count"),
            )

        def _split_generators(self, dl_manager):
            del dl_manager  # composed, nothing to download
            return {split: self._generate_examples(split) for split in ("train", "test")}

        def _generate_examples(self, split):
            composer = MultiDigitComposer.from_source(
                self.SOURCE, split=split, data_dir=self.DATA_DIR,
                canvas_size=self.CANVAS_SIZE, max_digits=self.MAX_DIGITS,
                digit_sizes=self.DIGIT_SIZES, composition=self.COMPOSITION)
            total = int(self.NUM_EXAMPLES[split])
            if self.MAX_EXAMPLES is not None:
                total = min(total, int(self.MAX_EXAMPLES))
            split_id = ("train", "test").index(split)
            for start in range(0, total, _CHUNK):
                rng = np.random.default_rng([self.SEED, split_id, start // _CHUNK])
                batch = composer.sample(rng, min(_CHUNK, total - start))
                images = np.round(255.0 * batch["x"]).astype(np.uint8)
                for row in range(images.shape[0]):
                    yield start + row, {
                        "image": images[row],
                        "count": int(batch["count"][row]),
                        "boxes": batch["boxes"][row],
                        "classes": batch["classes"][row],
                        "present": batch["present"][row],
                        "overlap": bool(batch["overlap"][row]),
                    }

    return MultiDigitCanvases


def __getattr__(name):
    # PEP 562: define the TFDS builder only when asked, so importing this module does
    # not pay for importing tensorflow_datasets.
    if name == "MultiDigitCanvases":
        return multi_digit_builder()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
