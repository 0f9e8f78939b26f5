"""Procedural dSprites: 64x64 binary sprites rendered from five factors.

The factors and their value tables follow dSprites (Matthey et al. 2017)::

    factor       size  values
    shape           3  0 square, 1 ellipse, 2 heart
    scale           6  np.linspace(0.5, 1, 6)
    orientation    40  np.linspace(0, 2 * pi, 40, endpoint=False)   (radians)
    x              32  np.linspace(0, 1, 32)
    y              32  np.linspace(0, 1, 32)

3 * 6 * 40 * 32 * 32 = 737,280 combinations. A combination is an int array of factor
*indices* ``[batch, 5]`` in the order of ``FACTOR_NAMES``; ``factors_from_index`` and
``index_from_factors`` map it to and from a single index in ``[0, 737280)`` with shape
slowest and y fastest, the ordering of the original ``dsprites_ndarray_*.npz``.

Orientation: the original dSprites samples 40 angles with both 0 and 2 pi included, so
its first and last angle draw the same image. Here the 40 angles leave 2 pi out
(``endpoint=False``, steps of 9 degrees) so every orientation index is a different
rotation.

Geometry (in pixels; pixel ``(row, col)`` covers ``[col, col + 1] x [row, row + 1]``,
its centre is at ``col + 0.5, row + 0.5``):

- The sprite centre is at column ``64 * (0.2 + 0.6 * x)`` and row
  ``64 * (0.2 + 0.6 * y)``: x moves the sprite right, y moves it down, about 1.24
  pixels per index step.
- At scale 1 a sprite's frame unit is ``_HALF_SIZE`` = 8 pixels; every shape lies within
  radius sqrt(2) frame units of its centre (11.3 pixels), so even the largest sprite at
  the extreme positions, at any orientation, stays 1.5 pixels clear of the canvas edge.
- Orientation turns the sprite counter-clockwise as displayed (y up).
- Square: half-width 1; ellipse: semi-axes 1.4 (horizontal at orientation 0) and 0.75;
  heart: the curve ``(x^2 + y^2 - 1)^3 - x^2 y^3 <= 0`` (lobes up, tip down), scaled to
  the square's area and centred on its centroid, so rotation does not move it. The heart
  is only mirror symmetric, so all 40 of its orientations differ; the square repeats
  every 90 degrees (10 indices) and the ellipse every 180 degrees (20 indices), as in
  dSprites.

Besides ``render`` the module gives a tf.data source (``sprites_dataset``), factor
sampling with one factor held fixed (``sample_factors``, for disentanglement metrics), a
loader for the original npz (``load_dsprites_npz``) and a TFDS builder
(``ProceduralSprites``, imported lazily because tensorflow_datasets is slow to import).
"""
import functools
import os

import numpy as np
import tensorflow as tf

from tfssvae.data.pipeline import ProceduralSource, batch_indices
from tfssvae.data.validation import check_int, index_vector

FACTOR_NAMES = ("shape", "scale", "orientation", "x", "y")
FACTOR_SIZES = (3, 6, 40, 32, 32)
NUM_COMBINATIONS = int(np.prod(FACTOR_SIZES))  # 737,280
SHAPE_NAMES = ("square", "ellipse", "heart")
IMAGE_SIZE = 64
IMAGE_SHAPE = (IMAGE_SIZE, IMAGE_SIZE, 1)

SHAPE_VALUES = np.arange(3, dtype=np.float64)
SCALE_VALUES = np.linspace(0.5, 1.0, 6)
ORIENTATION_VALUES = np.linspace(0.0, 2.0 * np.pi, 40, endpoint=False)
X_VALUES = np.linspace(0.0, 1.0, 32)
Y_VALUES = np.linspace(0.0, 1.0, 32)
# Float value of every factor index, in FACTOR_NAMES order.
FACTOR_VALUES = (SHAPE_VALUES, SCALE_VALUES, ORIENTATION_VALUES, X_VALUES, Y_VALUES)

# Mixed-radix strides: index = sum(factors * _STRIDES), y fastest, shape slowest.
_STRIDES = np.array([int(np.prod(FACTOR_SIZES[i + 1:])) for i in range(5)],
                    dtype=np.int64)

_HALF_SIZE = 8.0          # pixels per frame unit at scale 1
_POSITION_OFFSET = 0.2    # centre = 64 * (offset + span * value)
_POSITION_SPAN = 0.6
_ELLIPSE_AXES = (1.4, 0.75)
# Heart curve constants, measured once on a 4001^2 grid over [-1.5, 1.5]^2: the
# region's centroid is at y = 0.2935 (x = 0 by symmetry) and its area is 3.660, so
# multiplying frame coordinates by sqrt(3.660 / 4) = 0.9566 gives it the square's area
# of 4. Its farthest point from the centroid (the tip) is then 1.35 frame units away.
_HEART_CENTROID_Y = 0.2935
_HEART_SCALE = 0.9566

# Examples rendered at once. Each float32 [chunk, 25, 25] temporary (see _WINDOW) takes
# 2.4 KiB per example, 10 MiB at 4096, and a chunk needs about eight of them, so the
# temporaries stay under 100 MiB however many factors are passed; the float32 result
# itself takes 16 KiB per example.
_CHUNK = 4096

# Side of the square window around each sprite centre that render evaluates; see
# _render_chunk for why 25 pixels always hold the whole sprite.
_WINDOW = 25
_COS = np.cos(ORIENTATION_VALUES).astype(np.float32)
_SIN = np.sin(ORIENTATION_VALUES).astype(np.float32)


# --------------------------------------------------------------------- factor indices

def _factor_position(factor):
    """Returns the position (0..4) of a factor given by name or position."""
    if isinstance(factor, str):
        if factor not in FACTOR_NAMES:
            raise ValueError(
                f"fixed: unknown factor name {factor!r}; expected one of "
                f"{FACTOR_NAMES}.")
        return FACTOR_NAMES.index(factor)
    if (isinstance(factor, bool) or not isinstance(factor, (int, np.integer))
            or not 0 <= factor < len(FACTOR_NAMES)):
        raise ValueError(
            f"fixed: a factor must be a name in {FACTOR_NAMES} or a position in "
            f"[0, {len(FACTOR_NAMES)}); received {factor!r}.")
    return int(factor)


def check_factors(factors, name="factors"):
    """Checks an array of factor indices and returns it as int64.

    Args:
        factors: int array-like ``[batch, 5]``; column ``i`` indexes
            ``FACTOR_VALUES[i]`` and must be in ``[0, FACTOR_SIZES[i])``.
        name: the argument name to use in error messages.

    Returns:
        ``np.ndarray`` int64 ``[batch, 5]``.

    Raises:
        ValueError: if the array is not ``[batch, 5]`` with batch >= 1, not integer, or
            holds an index outside its factor's range (the message names the factor).
    """
    array = np.asarray(factors)
    if array.ndim != 2 or array.shape[1] != len(FACTOR_NAMES) or array.shape[0] < 1:
        raise ValueError(
            f"{name} must have shape [batch, {len(FACTOR_NAMES)}] with batch >= 1 (one "
            f"column per factor {FACTOR_NAMES}); received shape {array.shape}.")
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(
            f"{name} must hold integer factor indices; received dtype {array.dtype}.")
    array = array.astype(np.int64, copy=False)
    for column, (factor, size) in enumerate(zip(FACTOR_NAMES, FACTOR_SIZES)):
        values = array[:, column]
        outside = (values < 0) | (values >= size)
        if outside.any():
            row = int(np.flatnonzero(outside)[0])
            raise ValueError(
                f"{name}: factor {factor!r} (column {column}) must be in [0, {size}); "
                f"received {values[row]} at row {row}.")
    return array


def factors_from_index(indices):
    """Maps flat indices to factor indices (shape slowest, y fastest).

    Args:
        indices: int array-like ``[batch]`` in ``[0, 737280)``.

    Returns:
        int64 ``[batch, 5]`` factor indices.

    Raises:
        ValueError: if ``indices`` is not a non-empty int vector in range.
    """
    array = index_vector(indices, "indices")
    if array.max() >= NUM_COMBINATIONS:
        raise ValueError(
            f"indices must be in [0, {NUM_COMBINATIONS}); received values in "
            f"[{array.min()}, {array.max()}].")
    sizes = np.array(FACTOR_SIZES, dtype=np.int64)
    return (array[:, None] // _STRIDES) % sizes


def index_from_factors(factors):
    """Maps factor indices to flat indices; the inverse of ``factors_from_index``.

    Args:
        factors: int array-like ``[batch, 5]`` (see ``check_factors``).

    Returns:
        int64 ``[batch]`` in ``[0, 737280)``.
    """
    return check_factors(factors) @ _STRIDES


def factor_values(factors):
    """Looks up the float value of every factor index.

    Args:
        factors: int array-like ``[batch, 5]`` (see ``check_factors``).

    Returns:
        float64 ``[batch, 5]``: shape id, scale, orientation (radians), x, y.
    """
    factors = check_factors(factors)
    return np.stack([table[factors[:, i]] for i, table in enumerate(FACTOR_VALUES)],
                    axis=1)


def sample_factors(rng, batch_size, fixed=None):
    """Samples factor indices uniformly, optionally with factors held fixed.

    Args:
        rng: a ``np.random.Generator`` (or an int seed for ``np.random.default_rng``).
        batch_size: number of combinations, >= 1.
        fixed: ``None``; a dict ``{factor: index}``, e.g. ``{"shape": 2}``; or a pair
            ``(factor, index)``, e.g. ``(0, 2)``. A factor is a name in
            ``FACTOR_NAMES`` or its position. Fixed factors take the given index in
            every row (the FactorVAE metric's batches with one factor fixed).

    Returns:
        int64 ``[batch_size, 5]`` factor indices.

    Raises:
        ValueError: on ``batch_size < 1``, an unknown factor or an index out of range.
    """
    batch_size = check_int(batch_size, "batch_size", 1)
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    if fixed is None:
        fixed = {}
    elif isinstance(fixed, (tuple, list)):
        if len(fixed) != 2:
            raise ValueError(
                f"fixed must be a dict {{factor: index}} or a pair (factor, index); "
                f"received {fixed!r}.")
        fixed = {fixed[0]: fixed[1]}
    elif not isinstance(fixed, dict):
        raise ValueError(
            f"fixed must be None, a dict {{factor: index}} or a pair (factor, index); "
            f"received {fixed!r}.")
    factors = rng.integers(0, np.array(FACTOR_SIZES), size=(batch_size, 5))
    for factor, value in fixed.items():
        position = _factor_position(factor)
        size = FACTOR_SIZES[position]
        if (isinstance(value, bool) or not isinstance(value, (int, np.integer))
                or not 0 <= value < size):
            raise ValueError(
                f"fixed: factor {FACTOR_NAMES[position]!r} must be an int in "
                f"[0, {size}); received {value!r}.")
        factors[:, position] = value
    return factors.astype(np.int64)


# -------------------------------------------------------------------------- rendering

def _inside(shape, u, v):
    """Membership of frame coordinates ``u`` (right), ``v`` (up) in a unit shape."""
    if shape == 0:  # square
        return np.maximum(np.abs(u), np.abs(v)) <= 1.0
    if shape == 1:  # ellipse, long axis along u
        a, b = _ELLIPSE_AXES
        return (u / a) ** 2 + (v / b) ** 2 <= 1.0
    # Heart: move the origin to the curve's centroid and shrink to the square's area.
    x = u * _HEART_SCALE
    y = v * _HEART_SCALE + _HEART_CENTROID_Y
    x2 = x * x
    y2 = y * y
    t = x2 + y2 - 1.0
    # Products instead of ** 3: numpy's float power is several times slower.
    return t * t * t - x2 * y2 * y <= 0.0


def _render_chunk(factors, out):
    """Renders checked int64 factors ``[n, 5]`` into the uint8 view ``out [n, 64, 64]``.

    Only a 25x25 window around each sprite centre is evaluated (7x fewer pixels than
    the full canvas): every shape lies within sqrt(2) * 8 = 11.3 pixels of its centre,
    and a window starting at column ``floor(centre) - 12`` holds pixel centres from at
    most ``centre - 11.5`` to at least ``centre + 11.5``. With centres in
    [12.8, 51.2] the window always lies inside the canvas (columns 0..63).
    """
    window = np.arange(_WINDOW)
    for shape in range(len(SHAPE_NAMES)):
        picked = np.flatnonzero(factors[:, 0] == shape)
        if picked.size == 0:
            continue
        f = factors[picked]
        # Per-example parameters as [n, 1, 1] so they broadcast over the window.
        scale = (SCALE_VALUES[f[:, 1]] * _HALF_SIZE).astype(np.float32)[:, None, None]
        cos = _COS[f[:, 2]][:, None, None]
        sin = _SIN[f[:, 2]][:, None, None]
        span = IMAGE_SIZE * _POSITION_SPAN
        centre_col = IMAGE_SIZE * _POSITION_OFFSET + span * X_VALUES[f[:, 3]]
        centre_row = IMAGE_SIZE * _POSITION_OFFSET + span * Y_VALUES[f[:, 4]]
        # Canvas columns [n, 1, 25] and rows [n, 25, 1] of each example's window.
        cols = (np.floor(centre_col).astype(np.int64) - _WINDOW // 2)[:, None, None]
        cols = cols + window[None, None, :]
        rows = (np.floor(centre_row).astype(np.int64) - _WINDOW // 2)[:, None, None]
        rows = rows + window[None, :, None]
        # Offsets of pixel centres from the sprite centre: dx to the right, dy upwards
        # (image rows grow downwards; flipping them keeps rotation counter-clockwise).
        dx = (cols + 0.5 - centre_col[:, None, None]).astype(np.float32)
        dy = (centre_row[:, None, None] - rows - 0.5).astype(np.float32)
        # Rotate by -orientation and divide by scale: pixel -> sprite frame [n, 25, 25].
        u = (cos * dx + sin * dy) / scale
        v = (cos * dy - sin * dx) / scale
        out[picked[:, None, None], rows, cols] = _inside(shape, u, v)


def render(factors):
    """Renders sprites from factor indices.

    Deterministic, vectorised over examples and pixels (a loop runs over the three
    shapes and over chunks of 4096 examples, which bounds temporary memory to under
    100 MiB). Any of the 737,280 combinations can be rendered. The result takes 16 KiB
    per example (all 737,280 would take 11.3 GiB), so render in batches.

    Args:
        factors: int array-like ``[batch, 5]`` of indices into ``FACTOR_VALUES``
            (shape, scale, orientation, x, y).

    Returns:
        float32 ``[batch, 64, 64, 1]`` binary images (0 background, 1 sprite).

    Raises:
        ValueError: if ``factors`` is not ``[batch, 5]`` or an index is out of range.
    """
    factors = check_factors(factors)
    # Render into uint8 (a quarter of float32's memory), convert once at the end.
    images = np.zeros((factors.shape[0], IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    for start in range(0, factors.shape[0], _CHUNK):
        stop = start + _CHUNK
        _render_chunk(factors[start:stop], images[start:stop])
    return images.astype(np.float32)[..., None]


# ------------------------------------------------------------- metrics ground truth

class SpritesGroundTruth:
    """The sprites as ground truth for ``tfssvae.metrics.factor_vae_score``.

    Follows the metrics' ground-truth protocol: ``factor_sizes``, ``sample_factors``
    and ``observations``, with factors as indices in ``FACTOR_NAMES`` order.
    """

    factor_names = FACTOR_NAMES
    factor_sizes = FACTOR_SIZES

    def sample_factors(self, num, rng):
        """Uniform factor indices, int64 ``[num, 5]``, drawn from ``rng``."""
        return sample_factors(rng, num)  # the module function, not this method

    def observations(self, factors):
        """Rendered images, float32 ``[num, 64, 64, 1]``, of factors ``[num, 5]``."""
        return render(factors)


# --------------------------------------------------------------------------- tf.data

def _dataset_batch(seed, batch_index, batch_size):
    """The ``batch_index``-th batch of the stream seeded by ``seed`` (numpy side)."""
    # One generator per (seed, batch) keeps batches independent of how many are
    # rendered in parallel, so the stream is the same whatever the map parallelism.
    rng = np.random.default_rng([seed, int(batch_index)])
    factors = sample_factors(rng, batch_size)
    return render(factors), factors.astype(np.int32)


def sprites_dataset(batch_size, seed, num_batches=None):
    """A tf.data source of freshly rendered sprite batches with uniform factors.

    Args:
        batch_size: examples per batch, >= 1.
        seed: non-negative int; the same seed gives the same batches.
        num_batches: number of batches, or ``None`` for an endless stream.

    Returns:
        ``tf.data.Dataset`` of dicts::

            {"x": float32 [batch, 64, 64, 1],  # binary sprite images
             "factors": int32 [batch, 5],      # factor indices, FACTOR_NAMES order
             "y": int32 [batch],               # the shape factor
             "y_mask": bool [batch]}           # all False: unsupervised

    Raises:
        ValueError: on ``batch_size < 1``, a negative seed or ``num_batches < 1``.
    """
    batch_size = check_int(batch_size, "batch_size", 1)
    seed = check_int(seed, "seed", 0)
    indices = batch_indices(num_batches)

    def make_batch(batch_index):
        images, factors = tf.numpy_function(
            lambda i: _dataset_batch(seed, i, batch_size), [batch_index],
            [tf.float32, tf.int32], stateful=False)
        images = tf.ensure_shape(images, (batch_size,) + IMAGE_SHAPE)
        factors = tf.ensure_shape(factors, (batch_size, len(FACTOR_NAMES)))
        return {"x": images, "factors": factors, "y": factors[:, 0],
                "y_mask": tf.zeros([batch_size], dtype=tf.bool)}

    # deterministic=True keeps batch order fixed while batches render in parallel.
    return (indices.map(make_batch, num_parallel_calls=tf.data.AUTOTUNE,
                        deterministic=True)
            .prefetch(tf.data.AUTOTUNE))


# ------------------------------------------------------------------------ npz loader

class SpritesSource(ProceduralSource):
    """Freshly rendered sprites as a batch source for ``training.train`` (``ProceduralSource``)."""

    def dataset(self, seed, num_batches):
        return sprites_dataset(self.batch_size, seed, num_batches=num_batches)


def load_dsprites_npz(path):
    """Loads the original ``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz``.

    The file holds ``imgs`` uint8 ``[N, 64, 64]`` (values 0/1), ``latents_classes``
    int ``[N, 6]`` (colour, shape, scale, orientation, x, y; colour is always 0 and is
    dropped) and ``latents_values`` (not needed). Images stay uint8 because the full
    file is 2.9 GB as uint8 and would be 11.6 GB as float32; convert per batch with
    ``images.astype(np.float32)``. Note the original's 40 orientations include both 0
    and 2 pi, unlike ``ORIENTATION_VALUES``.

    Args:
        path: path of the npz file.

    Returns:
        ``(images, factors)``: uint8 ``[N, 64, 64, 1]`` and int32 ``[N, 5]`` factor
        indices in ``FACTOR_NAMES`` order.

    Raises:
        ValueError: if ``imgs`` or ``latents_classes`` is missing (the message names
            them), the shapes disagree or a factor index is out of range.
        FileNotFoundError: if ``path`` does not exist.
    """
    # allow_pickle=False: the original also stores a pickled "metadata" dict, which is
    # never read here, so no pickle from the file is ever executed.
    with np.load(os.fspath(path), allow_pickle=False) as archive:
        missing = [key for key in ("imgs", "latents_classes") if key not in archive]
        if missing:
            raise ValueError(
                f"{path}: the npz lacks the array(s) {missing}; a dSprites npz holds "
                f"'imgs' [N, 64, 64] and 'latents_classes' [N, 6]; found "
                f"{sorted(archive.files)}.")
        images = archive["imgs"]
        classes = archive["latents_classes"]
    if images.ndim != 3 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(
            f"{path}: 'imgs' must have shape [N, 64, 64]; received {images.shape}.")
    if classes.ndim != 2 or classes.shape[1] != 6:
        raise ValueError(
            f"{path}: 'latents_classes' must have shape [N, 6] (colour, shape, scale, "
            f"orientation, x, y); received {classes.shape}.")
    if classes.shape[0] != images.shape[0]:
        raise ValueError(
            f"{path}: 'imgs' and 'latents_classes' must have the same number of rows; "
            f"received {images.shape[0]} and {classes.shape[0]}.")
    factors = check_factors(classes[:, 1:], name=f"{path}: latents_classes[:, 1:]")
    return images.astype(np.uint8, copy=False)[..., None], factors.astype(np.int32)


# ----------------------------------------------------------------------- TFDS builder

@functools.lru_cache(maxsize=None)
def sprites_builder():
    """Returns the TFDS builder class ``ProceduralSprites`` (imports TFDS on first use).

    The class is built once and cached, because TFDS registers a builder by name when
    it is defined and a second definition would clash. It is also reachable as
    ``tfssvae.data.sprites.ProceduralSprites``, which calls this function.

    ``ProceduralSprites`` (dataset name ``procedural_sprites``, version 1.0.0) has one
    ``train`` split of all 737,280 combinations in ``index_from_factors`` order, each
    example::

        {"image": uint8 (64, 64, 1) with values 0/1,
         "label_shape": ClassLabel(3), "label_scale": ClassLabel(6),
         "label_orientation": ClassLabel(40), "label_x_position": ClassLabel(32),
         "label_y_position": ClassLabel(32),
         "value_shape", "value_scale", "value_orientation", "value_x_position",
         "value_y_position": float32 scalars}

    (the feature names of TFDS's own ``dsprites``). Set the class attribute
    ``MAX_EXAMPLES`` in a subclass to generate only the first examples.
    """
    # pylint: disable=import-outside-toplevel
    import tensorflow_datasets as tfds
    from etils import epath  # a dependency of tensorflow_datasets

    keys = ("shape", "scale", "orientation", "x_position", "y_position")

    class ProceduralSprites(tfds.core.GeneratorBasedBuilder):
        """dSprites rendered by ``tfssvae.data.sprites.render``; no download."""

        VERSION = tfds.core.Version("1.0.0")
        RELEASE_NOTES = {"1.0.0": "First release."}
        MAX_EXAMPLES = None  # None: all 737,280 combinations
        # TFDS looks for metadata files (README, checksums) in the package of the
        # module that defines a builder; pin it here so that subclasses defined in a
        # plain module (a script, a test file) still work.
        pkg_dir_path = epath.Path(os.path.dirname(os.path.abspath(__file__)))

        def _info(self):
            features = {"image": tfds.features.Image(shape=IMAGE_SHAPE,
                                                     dtype=np.uint8)}
            for key, size in zip(keys, FACTOR_SIZES):
                names = list(SHAPE_NAMES) if key == "shape" else None
                features["label_" + key] = tfds.features.ClassLabel(
                    names=names, num_classes=None if names else size)
                features["value_" + key] = tfds.features.Scalar(dtype=np.float32)
            return self.dataset_info_from_configs(
                description="dSprites-style 64x64 binary sprites rendered "
                "procedurally: shape, scale, orientation, x and y.",
                features=tfds.features.FeaturesDict(features),
                supervised_keys=("image", "label_shape"),
            )

        def _split_generators(self, dl_manager):
            del dl_manager  # rendered, nothing to download
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            total = NUM_COMBINATIONS
            if self.MAX_EXAMPLES is not None:
                total = min(total, int(self.MAX_EXAMPLES))
            for start in range(0, total, _CHUNK):
                indices = np.arange(start, min(start + _CHUNK, total))
                factors = factors_from_index(indices)
                values = factor_values(factors).astype(np.float32)
                images = render(factors).astype(np.uint8)
                for row, index in enumerate(indices):
                    example = {"image": images[row]}
                    for column, key in enumerate(keys):
                        example["label_" + key] = int(factors[row, column])
                        example["value_" + key] = values[row, column]
                    yield int(index), example

    return ProceduralSprites


def __getattr__(name):
    # PEP 562: define the TFDS builder only when someone asks for it, so importing this
    # module (e.g. for training) does not pay for importing tensorflow_datasets.
    if name == "ProceduralSprites":
        return sprites_builder()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
