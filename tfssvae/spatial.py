"""A differentiable spatial transformer (Jaderberg et al. 2015) in TensorFlow ops.

Reads glimpses from a canvas and writes decoded glimpses back onto it, batched, with
gradients to the images and to the transform (the ``z_where`` of an AIR-style model).

Coordinates
-----------
Every image, canvas or glimpse, spans the square ``[-1, 1] x [-1, 1]`` in normalised
coordinates ``(x, y)``: ``x`` grows to the right (columns), ``y`` downwards (rows), and
``(-1, -1)`` is the top-left *corner* of the top-left pixel. This is the
``align_corners=False`` convention: pixel ``j`` of ``n`` covers
``[2 j / n - 1, 2 (j + 1) / n - 1]`` and its centre is at ``(2 j + 1) / n - 1``. It is
chosen (over ``align_corners=True``, where -1 and 1 are the centres of the edge pixels)
because then a glimpse's footprint is exactly the box it covers, pixel edges on pixel
edges, whatever the resolutions: a 25x25 glimpse written at half scale covers exactly 25
pixels of a 50x50 canvas, and a box given in pixels converts to a transform without
half-pixel corrections.

A transform is a 2x3 affine matrix ``theta`` that maps a *glimpse* point to a *canvas*
point, ``[x_c, y_c] = theta @ [x_g, y_g, 1]`` (the sampling grid convention of
Jaderberg et al. and of ``torch.nn.functional.affine_grid``). ``where`` is the usual
restricted form of it:

- ``[batch, 3]`` ``(s, x, y)``: ``theta = [[s, 0, x], [0, s, y]]``: the glimpse is a
  square of side ``s`` canvas widths (``s = 1``: the whole canvas) centred at ``(x, y)``;
- ``[batch, 4]`` ``(s_x, s_y, x, y)``: separate horizontal and vertical scales;
- ``[batch, 2, 3]``: a full affine ``theta`` (rotation, shear, anything invertible).

``read_glimpse`` samples the canvas at the glimpse pixels mapped by ``theta``;
``write_glimpse`` samples the glimpse at the canvas pixels mapped by ``theta``'s
inverse, so reading back a written glimpse with the same ``where`` gives the glimpse
(exactly when the two pixel grids line up, approximately otherwise: two bilinear
interpolations blur a little). ``boxes_to_where`` and ``where_to_boxes`` convert to and
from boxes ``(y_min, x_min, y_max, x_max)`` in ``[0, 1]`` canvas units, the
``tf.image.draw_bounding_boxes`` convention used by ``tfssvae.data.multi_digit``.

Sampling is bilinear with zero padding (``scipy.ndimage``'s ``mode="grid-constant"``,
``torch``'s ``padding_mode="zeros"``): pixels outside the sampled image count as 0 and
are interpolated with those inside, so a point more than half a pixel beyond the image's
edge reads 0, and the image fades linearly to 0 across the half pixel on either side of
its edge. A written glimpse is therefore 0 farther than half a glimpse pixel outside its
footprint (written digits, black at their borders, can be summed onto a canvas), and the
output is continuous in the transform, which keeps the gradient to ``where`` honest at
the footprint's edge. Every function keeps the dtype of its floating inputs (float32 in the models,
float64 in gradient checks).
"""
import numbers

import tensorflow as tf

__all__ = [
    "where_to_affine",
    "invert_affine",
    "affine_grid",
    "bilinear_sample",
    "read_glimpse",
    "write_glimpse",
    "boxes_to_where",
    "where_to_boxes",
]


# ------------------------------------------------------------------------------ checks

def _size_pair(size, name):
    """``size`` as ``(height, width)`` Python ints >= 1; an int means a square."""
    pair = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
    if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, numbers.Integral)
                             or v < 1 for v in pair):
        raise ValueError(f"{name} must be an int or a pair (height, width) of ints >= 1; "
                         f"received {size!r}.")
    return int(pair[0]), int(pair[1])


def _check_images(images, name):
    """Converts to a float tensor and checks rank 4 ``[batch, height, width, channels]``."""
    images = tf.convert_to_tensor(images)
    if not images.dtype.is_floating:
        images = tf.cast(images, tf.float32)
    if images.shape.rank is not None and images.shape.rank != 4:
        raise ValueError(f"{name} must have rank 4 [batch, height, width, channels]; "
                         f"received shape {images.shape}.")
    return images


def _check_batch(a, b, name_a, name_b):
    """Raises if the static batch sizes of ``a`` and ``b`` are known and differ."""
    batch_a, batch_b = a.shape[:1].num_elements(), b.shape[:1].num_elements()
    if batch_a is not None and batch_b is not None and batch_a != batch_b:
        raise ValueError(f"{name_a} and {name_b} must have the same batch size; received "
                         f"{batch_a} and {batch_b} (shapes {a.shape} and {b.shape}).")


# -------------------------------------------------------------------------- transforms

def where_to_affine(where, dtype=None):
    """Turns ``where`` into affine matrices.

    Args:
        where: ``[batch, 3]`` ``(s, x, y)``, ``[batch, 4]`` ``(s_x, s_y, x, y)`` or
            ``[batch, 2, 3]`` affine matrices (returned as they are); see the module
            docstring.
        dtype: float dtype to convert to; by default ``where``'s own (float32 for ints).

    Returns:
        ``[batch, 2, 3]`` matrices mapping glimpse points to canvas points.

    Raises:
        ValueError: if ``where`` has none of the three shapes.
    """
    where = tf.convert_to_tensor(where, dtype=dtype)
    if not where.dtype.is_floating:
        where = tf.cast(where, tf.float32)
    shape = where.shape
    if shape.rank == 3 and shape[1:] == (2, 3):
        return where
    if shape.rank == 2 and shape[1] in (3, 4):
        if shape[1] == 3:
            scale_x = scale_y = where[:, 0]
            shift_x, shift_y = where[:, 1], where[:, 2]
        else:
            scale_x, scale_y, shift_x, shift_y = tf.unstack(where, axis=1)
        zero = tf.zeros_like(scale_x)
        rows = [tf.stack([scale_x, zero, shift_x], axis=-1),
                tf.stack([zero, scale_y, shift_y], axis=-1)]
        return tf.stack(rows, axis=1)
    raise ValueError(
        "where must have shape [batch, 3] (s, x, y), [batch, 4] (s_x, s_y, x, y) or "
        f"[batch, 2, 3] (affine matrices); received shape {shape}.")


def invert_affine(theta):
    """Inverts affine maps.

    Args:
        theta: ``[batch, 2, 3]``, ``[[a, b, t_x], [c, d, t_y]]`` with ``ad - bc != 0``.

    Returns:
        ``[batch, 2, 3]`` matrices of the inverse maps: ``[A^-1, -A^-1 t]``. A singular
        map (a zero scale) gives inf/NaN, as dividing by zero does; the model keeps its
        scales away from 0.

    Raises:
        ValueError: if ``theta`` is not ``[batch, 2, 3]``.
    """
    theta = where_to_affine(theta)
    if theta.shape.rank != 3:
        raise ValueError(f"theta must have shape [batch, 2, 3]; received {theta.shape}.")
    a, b, t_x = theta[:, 0, 0], theta[:, 0, 1], theta[:, 0, 2]
    c, d, t_y = theta[:, 1, 0], theta[:, 1, 1], theta[:, 1, 2]
    # The closed form of a 2x2 inverse: cheaper than tf.linalg.inv for tiny matrices and
    # differentiable everywhere except at det = 0.
    det = a * d - b * c
    ia, ib, ic, id_ = d / det, -b / det, -c / det, a / det
    rows = [tf.stack([ia, ib, -(ia * t_x + ib * t_y)], axis=-1),
            tf.stack([ic, id_, -(ic * t_x + id_ * t_y)], axis=-1)]
    return tf.stack(rows, axis=1)


def affine_grid(theta, size):
    """Maps the pixel centres of an output image through affine maps.

    Args:
        theta: ``[batch, 2, 3]`` maps from output points to input points (or any
            ``where`` form accepted by ``where_to_affine``).
        size: output ``(height, width)``, or an int for a square.

    Returns:
        ``[batch, height, width, 2]``: for output pixel ``(i, j)`` the input point
        ``(x, y) = theta @ [(2 j + 1) / width - 1, (2 i + 1) / height - 1, 1]``, in
        normalised coordinates (``align_corners=False``).
    """
    theta = where_to_affine(theta)
    height, width = _size_pair(size, "size")
    dtype = theta.dtype
    xs = (2.0 * tf.range(width, dtype=dtype) + 1.0) / width - 1.0
    ys = (2.0 * tf.range(height, dtype=dtype) + 1.0) / height - 1.0
    grid_y, grid_x = tf.meshgrid(ys, xs, indexing="ij")  # [height, width] each
    base = tf.stack([grid_x, grid_y, tf.ones_like(grid_x)], axis=-1)  # [h, w, 3]
    return tf.einsum("bkj,hwj->bhwk", theta, base)


def bilinear_sample(images, grid):
    """Samples images bilinearly at normalised points, with zero padding.

    Args:
        images: ``[batch, height, width, channels]``.
        grid: ``[batch, out_height, out_width, 2]`` points ``(x, y)`` in normalised
            coordinates of ``images`` (``align_corners=False``: the centre of pixel
            ``(i, j)`` is at ``x = (2 j + 1) / width - 1``, ``y = (2 i + 1) / height - 1``).

    Returns:
        ``[batch, out_height, out_width, channels]``, differentiable with respect to
        ``images`` and ``grid`` (piecewise linear in the points, so the gradient with
        respect to a point is that of the bilinear patch it falls in).

    Raises:
        ValueError: on wrong ranks, a last grid dimension other than 2, or batch sizes
            that differ.
    """
    images = _check_images(images, "images")
    grid = tf.convert_to_tensor(grid, dtype=images.dtype)
    if grid.shape.rank is not None and (grid.shape.rank != 4 or grid.shape[-1] != 2):
        raise ValueError("grid must have shape [batch, out_height, out_width, 2] (x, y); "
                         f"received {grid.shape}.")
    _check_batch(images, grid, "images", "grid")
    dtype = images.dtype
    shape = tf.shape(images)
    batch, height, width, channels = shape[0], shape[1], shape[2], shape[3]
    height_f, width_f = tf.cast(height, dtype), tf.cast(width, dtype)
    # Normalised -> pixel-index coordinates, where pixel centres are the integers.
    col = ((grid[..., 0] + 1.0) * width_f - 1.0) * 0.5
    row = ((grid[..., 1] + 1.0) * height_f - 1.0) * 0.5
    col0, row0 = tf.floor(col), tf.floor(row)  # floor has no gradient: weights carry it
    weight_col1, weight_row1 = col - col0, row - row0
    weight_col0, weight_row0 = 1.0 - weight_col1, 1.0 - weight_row1

    flat = tf.reshape(images, tf.stack([batch, height * width, channels]))

    def tap(row_index, col_index, weight):
        # Validity from the float indices, before any cast: a far-away point must not
        # wrap or clip onto an edge pixel.
        valid = ((row_index >= 0.0) & (row_index <= height_f - 1.0)
                 & (col_index >= 0.0) & (col_index <= width_f - 1.0))
        r = tf.cast(tf.clip_by_value(row_index, 0.0, height_f - 1.0), tf.int32)
        c = tf.cast(tf.clip_by_value(col_index, 0.0, width_f - 1.0), tf.int32)
        values = tf.gather(flat, r * width + c, batch_dims=1)  # [b, h, w, channels]
        return values * (weight * tf.cast(valid, dtype))[..., None]

    return (tap(row0, col0, weight_row0 * weight_col0)
            + tap(row0, col0 + 1.0, weight_row0 * weight_col1)
            + tap(row0 + 1.0, col0, weight_row1 * weight_col0)
            + tap(row0 + 1.0, col0 + 1.0, weight_row1 * weight_col1))


# ----------------------------------------------------------------------- read / write

def read_glimpse(canvas, where, glimpse_size):
    """Reads the part of a canvas that ``where`` points at, resampled to a glimpse.

    Args:
        canvas: ``[batch, height, width, channels]``.
        where: ``[batch, 3]`` ``(s, x, y)``, ``[batch, 4]`` ``(s_x, s_y, x, y)`` or
            ``[batch, 2, 3]`` glimpse-to-canvas maps (see the module docstring).
        glimpse_size: ``(glimpse_height, glimpse_width)``, or an int for a square.

    Returns:
        ``[batch, glimpse_height, glimpse_width, channels]``; 0 where the glimpse
        reaches more than half a canvas pixel outside the canvas.
    """
    canvas = _check_images(canvas, "canvas")
    theta = where_to_affine(where, dtype=canvas.dtype)
    _check_batch(canvas, theta, "canvas", "where")
    return bilinear_sample(canvas, affine_grid(theta, _size_pair(glimpse_size,
                                                                  "glimpse_size")))


def write_glimpse(glimpse, where, canvas_size):
    """Writes a glimpse onto an empty canvas by the inverse of ``where``'s transform.

    Args:
        glimpse: ``[batch, glimpse_height, glimpse_width, channels]``.
        where: as for ``read_glimpse``: the glimpse's place on the canvas.
        canvas_size: ``(height, width)``, or an int for a square.

    Returns:
        ``[batch, height, width, channels]``: the glimpse resampled into its footprint,
        0 more than half a glimpse pixel outside it. Written glimpses add up to a scene; ``read_glimpse`` of the result
        with the same ``where`` gives the glimpse back.
    """
    glimpse = _check_images(glimpse, "glimpse")
    theta = where_to_affine(where, dtype=glimpse.dtype)
    _check_batch(glimpse, theta, "glimpse", "where")
    inverse = invert_affine(theta)
    return bilinear_sample(glimpse, affine_grid(inverse, _size_pair(canvas_size,
                                                                     "canvas_size")))


# ------------------------------------------------------------------------------- boxes

def boxes_to_where(boxes):
    """Converts boxes to ``where`` ``(s_x, s_y, x, y)``.

    Args:
        boxes: ``[..., 4]`` ``(y_min, x_min, y_max, x_max)`` in ``[0, 1]`` canvas units
            (0 the canvas's top/left edge, 1 its bottom/right edge).

    Returns:
        ``[..., 4]`` ``(s_x, s_y, x, y)``: a glimpse covering exactly each box. For a
        square box on a square canvas ``s_x == s_y``, and ``where[..., 1:]`` is the
        ``(s, x, y)`` form.
    """
    boxes = tf.convert_to_tensor(boxes)
    if not boxes.dtype.is_floating:
        boxes = tf.cast(boxes, tf.float32)
    if boxes.shape.rank is not None and (boxes.shape.rank < 1 or boxes.shape[-1] != 4):
        raise ValueError("boxes must have shape [..., 4] (y_min, x_min, y_max, x_max); "
                         f"received {boxes.shape}.")
    y_min, x_min, y_max, x_max = tf.unstack(boxes, axis=-1)
    # [0, 1] spans 2 normalised units, and so does a glimpse: the scale is the box's
    # side in canvas widths; the shift is the box centre in normalised coordinates.
    return tf.stack([x_max - x_min, y_max - y_min, x_min + x_max - 1.0,
                     y_min + y_max - 1.0], axis=-1)


def where_to_boxes(where):
    """Converts ``where`` ``(s, x, y)`` or ``(s_x, s_y, x, y)`` to boxes.

    Args:
        where: ``[..., 3]`` or ``[..., 4]`` (see the module docstring; scales > 0).

    Returns:
        ``[..., 4]`` ``(y_min, x_min, y_max, x_max)`` in ``[0, 1]`` canvas units (values
        outside [0, 1] for a glimpse reaching beyond the canvas).
    """
    where = tf.convert_to_tensor(where)
    if not where.dtype.is_floating:
        where = tf.cast(where, tf.float32)
    if where.shape.rank is not None and (where.shape.rank < 1
                                         or where.shape[-1] not in (3, 4)):
        raise ValueError("where must have shape [..., 3] (s, x, y) or [..., 4] "
                         f"(s_x, s_y, x, y); received {where.shape}.")
    if where.shape[-1] == 3:
        scale_x = scale_y = where[..., 0]
        shift_x, shift_y = where[..., 1], where[..., 2]
    else:
        scale_x, scale_y, shift_x, shift_y = tf.unstack(where, axis=-1)
    return tf.stack([(shift_y - scale_y + 1.0) * 0.5, (shift_x - scale_x + 1.0) * 0.5,
                     (shift_y + scale_y + 1.0) * 0.5, (shift_x + scale_x + 1.0) * 0.5],
                    axis=-1)
