"""Tests for tfssvae.spatial: the affine grid, bilinear sampling, glimpse read/write."""
import numpy as np
import pytest
import scipy.ndimage
import tensorflow as tf

from tfssvae import spatial

# Float32 arithmetic on coordinates of at most ~50 pixels carries a relative error of
# ~6e-8, i.e. a few 1e-6 pixels; bilinear interpolation of values in [0, 1] has slope at
# most 1 per pixel, so results agree with exact arithmetic to ~1e-5.
FLOAT32_ATOL = 2e-5


def smooth_image(size, centre, sigma, rng=None):
    """[size, size] Gaussian blob(s), float32; ``centre`` in pixel units (row, col)."""
    rows, cols = np.mgrid[0:size, 0:size] + 0.5
    image = np.exp(-((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2)
                   / (2 * sigma ** 2))
    return image.astype(np.float32)


def scipy_read(canvas, theta, out_size):
    """Reference for read_glimpse with scipy: [H, W] canvas, 2x3 theta, (h, w) out.

    Output pixel index (r, c) -> glimpse normalised (x, y) -> canvas normalised by
    theta -> canvas pixel index (row, col), all affine: compose the three 3x3 matrices
    and hand scipy the (row, col) matrix and offset.
    """
    height, width = canvas.shape
    out_h, out_w = out_size
    index_to_glimpse = np.array([[0, 2 / out_w, 1 / out_w - 1],   # x from c
                                 [2 / out_h, 0, 1 / out_h - 1],   # y from r
                                 [0, 0, 1]])
    glimpse_to_canvas = np.vstack([theta, [0, 0, 1]])
    canvas_to_index = np.array([[0, height / 2, (height - 1) / 2],  # row from y
                                [width / 2, 0, (width - 1) / 2],    # col from x
                                [0, 0, 1]])
    total = canvas_to_index @ glimpse_to_canvas @ index_to_glimpse
    # 'grid-constant': neighbours outside the image read cval=0 and are interpolated
    # with those inside, i.e. zero padding (plain 'constant' does not interpolate there).
    return scipy.ndimage.affine_transform(
        canvas.astype(np.float64), total[:2, :2], offset=total[:2, 2],
        output_shape=out_size, order=1, mode="grid-constant", cval=0.0)


# ------------------------------------------------------------------------- identities

def test_identity_transform_reads_and_writes_the_image_itself():
    rng = np.random.default_rng(0)
    image = rng.uniform(size=[2, 13, 17, 3]).astype(np.float32)  # not square, 3 channels
    where = np.array([[1.0, 0.0, 0.0]] * 2, np.float32)
    read = spatial.read_glimpse(image, where, (13, 17)).numpy()
    written = spatial.write_glimpse(image, where, (13, 17)).numpy()
    np.testing.assert_allclose(read, image, atol=FLOAT32_ATOL)
    np.testing.assert_allclose(written, image, atol=FLOAT32_ATOL)
    round_trip = spatial.read_glimpse(spatial.write_glimpse(image, where, (13, 17)),
                                      where, (13, 17)).numpy()
    np.testing.assert_allclose(round_trip, image, atol=FLOAT32_ATOL)


def test_aligned_write_puts_the_glimpse_in_its_box_and_reads_it_back():
    # A 25x25 glimpse at half scale on a 50x50 canvas, its top-left corner on pixel
    # (7, 20): canvas and glimpse pixel centres coincide, so writing copies the glimpse
    # into rows 7..31, columns 20..44 and leaves every other pixel 0.
    rng = np.random.default_rng(1)
    glimpse = rng.uniform(size=[1, 25, 25, 1]).astype(np.float32)
    box = np.array([[7 / 50, 20 / 50, 32 / 50, 45 / 50]], np.float32)
    where = spatial.boxes_to_where(box)
    np.testing.assert_allclose(where.numpy(), [[0.5, 0.5, 0.3, -0.22]], atol=1e-6)
    canvas = spatial.write_glimpse(glimpse, where, 50).numpy()
    expected = np.zeros([1, 50, 50, 1], np.float32)
    expected[0, 7:32, 20:45] = glimpse[0]
    np.testing.assert_allclose(canvas, expected, atol=FLOAT32_ATOL)
    back = spatial.read_glimpse(canvas, where, 25).numpy()
    np.testing.assert_allclose(back, glimpse, atol=FLOAT32_ATOL)


def test_read_of_write_is_close_to_identity_for_a_scale_and_shift_on_a_smooth_image():
    # 20x20 glimpse written into a 0.6 x 0.6 window (30 canvas pixels, so the grids do
    # not line up) placed off-centre but inside the canvas. Bilinear interpolation on a
    # grid of spacing h errs by at most h^2 (|f_xx| + |f_yy|) / 8; for a Gaussian of
    # sigma = 3 glimpse pixels (|f''| <= 1 / 9 at the peak) that is 0.028 for the write
    # (h = 1 glimpse pixel) plus 0.012 for the read (h = 20 / 30): 0.04 in all.
    glimpse = smooth_image(20, (10.0, 9.0), 3.0)[None, :, :, None]
    where = np.array([[0.6, -0.25, 0.3]], np.float32)
    canvas = spatial.write_glimpse(glimpse, where, 50)
    back = spatial.read_glimpse(canvas, where, 20).numpy()
    np.testing.assert_allclose(back, glimpse, atol=0.04)
    # ... and the written blob sits where the transform says: its peak at glimpse
    # point (x, y) = ((2 * 9) / 20 - 1, (2 * 10) / 20 - 1) = (-0.1, 0), i.e. canvas
    # point (0.6 * -0.1 - 0.25, 0.3) -> column 17.25, row 32.5 (pixel units).
    canvas = canvas.numpy()[0, :, :, 0]
    row, col = np.unravel_index(np.argmax(canvas), canvas.shape)
    assert abs(row + 0.5 - 32.5) <= 1.0 and abs(col + 0.5 - 17.25) <= 1.0


def test_written_glimpse_fills_its_footprint_and_is_zero_beyond_it():
    glimpse = np.ones([1, 10, 10, 1], np.float32)
    canvas = spatial.write_glimpse(glimpse, [[0.4, 0.5, -0.5]], 40).numpy()[0, :, :, 0]
    # The box is x in [0.1, 0.9], y in [-0.9, -0.1] -> columns 22..37, rows 2..17, one
    # glimpse pixel per 1.6 canvas pixels. Zero padding: canvas pixel centres within
    # half a glimpse pixel (0.8 canvas pixels) of the box's edge, inside or outside,
    # interpolate between the glimpse and the padding; farther inside they read 1,
    # farther outside exactly 0.
    interior = np.zeros_like(canvas, bool)
    interior[3:17, 23:37] = True
    reach = np.zeros_like(canvas, bool)
    reach[1:19, 21:39] = True
    np.testing.assert_allclose(canvas[interior], 1.0, atol=FLOAT32_ATOL)
    ring = canvas[reach & ~interior]
    assert np.all((ring > 0.0) & (ring < 1.0))
    assert np.all(canvas[~reach] == 0.0)
    np.testing.assert_allclose(canvas[10, 21:23], [0.1875, 0.8125], atol=FLOAT32_ATOL)


# -------------------------------------------------------------------- against scipy

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_read_with_a_random_affine_map_matches_scipy(seed):
    rng = np.random.default_rng(seed)
    canvas = rng.uniform(size=[23, 31]).astype(np.float32)
    angle = rng.uniform(-np.pi, np.pi)
    scales = rng.uniform(0.3, 1.2, size=2)
    shear = rng.uniform(-0.4, 0.4)
    linear = (np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
              @ np.array([[scales[0], shear], [0.0, scales[1]]]))
    theta = np.hstack([linear, rng.uniform(-0.6, 0.6, size=[2, 1])])
    out_size = (11, 14)
    ours = spatial.read_glimpse(canvas[None, :, :, None], theta[None].astype(np.float32),
                                out_size).numpy()[0, :, :, 0]
    reference = scipy_read(canvas, theta, out_size)
    assert np.abs(reference).max() > 0.1  # the map does land on the canvas
    np.testing.assert_allclose(ours, reference, atol=FLOAT32_ATOL)


def test_write_matches_scipy_with_the_inverse_map():
    rng = np.random.default_rng(3)
    glimpse = rng.uniform(size=[12, 12]).astype(np.float32)
    theta = np.array([[0.4, 0.1, 0.2], [-0.15, 0.5, -0.3]])
    ours = spatial.write_glimpse(glimpse[None, :, :, None], theta[None], 40).numpy()
    inverse = spatial.invert_affine(theta[None]).numpy()[0]
    np.testing.assert_allclose(np.vstack([inverse, [0, 0, 1]])
                               @ np.vstack([theta, [0, 0, 1]]), np.eye(3), atol=1e-12)
    np.testing.assert_allclose(ours[0, :, :, 0], scipy_read(glimpse, inverse, (40, 40)),
                               atol=FLOAT32_ATOL)


# ---------------------------------------------------------------------------- gradients

def test_gradients_are_finite_nonzero_and_match_finite_differences():
    rng = np.random.default_rng(4)
    canvas = tf.constant(smooth_image(30, (12.0, 17.0), 4.0)[None, :, :, None]
                         .astype(np.float64))
    where = tf.constant([[0.4537, 0.1123, -0.1571]], tf.float64)  # no point on a kink
    weights = tf.constant(rng.normal(size=[1, 9, 9, 1]))

    def loss_of_where(w):
        return tf.reduce_sum(spatial.read_glimpse(canvas, w, 9) * weights)

    with tf.GradientTape(persistent=True) as tape:
        tape.watch([canvas, where])
        read_loss = loss_of_where(where)
        written = spatial.write_glimpse(tf.ones([1, 6, 6, 1], tf.float64), where, 30)
        write_loss = tf.reduce_sum(written * canvas)
    for loss in (read_loss, write_loss):
        for variable in (canvas, where):
            gradient = tape.gradient(loss, variable).numpy()
            assert np.all(np.isfinite(gradient))
            assert np.abs(gradient).max() > 1e-3
    # Bilinear sampling is piecewise linear in the points: a 1e-6 step stays within
    # one patch, so central differences are exact up to float64 rounding (~1e-10 / 1e-6).
    analytic, numeric = tf.test.compute_gradient(loss_of_where, [where], delta=1e-6)
    np.testing.assert_allclose(analytic[0], numeric[0], rtol=1e-4, atol=1e-6)


def test_runs_in_a_tf_function_with_an_unknown_batch_size():
    @tf.function(input_signature=[tf.TensorSpec([None, 20, 20, 1]),
                                  tf.TensorSpec([None, 3])])
    def round_trip(canvas, where):
        glimpse = spatial.read_glimpse(canvas, where, 10)
        return spatial.write_glimpse(glimpse, where, 20)

    canvas = np.random.default_rng(5).uniform(size=[3, 20, 20, 1]).astype(np.float32)
    result = round_trip(canvas, np.tile([[1.0, 0.0, 0.0]], [3, 1]).astype(np.float32))
    assert result.shape == (3, 20, 20, 1) and result.dtype == tf.float32


# -------------------------------------------------------------------------------- boxes

def test_boxes_and_where_round_trip():
    boxes = np.array([[[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 1.0, 1.0]]], np.float32)
    where = spatial.boxes_to_where(boxes)
    assert where.shape == (1, 2, 4)
    np.testing.assert_allclose(where.numpy()[0, 1], [1.0, 1.0, 0.0, 0.0], atol=1e-7)
    np.testing.assert_allclose(spatial.where_to_boxes(where).numpy(), boxes, atol=1e-6)
    np.testing.assert_allclose(spatial.where_to_boxes(where[..., 1:]).numpy(), boxes,
                               atol=1e-6)  # square boxes: (s, x, y) with s = s_y


# ---------------------------------------------------------------------------- bad input

def test_bad_inputs_name_the_argument():
    canvas = np.zeros([2, 10, 10, 1], np.float32)
    with pytest.raises(ValueError, match=r"where must have shape \[batch, 3\]"):
        spatial.read_glimpse(canvas, np.zeros([2, 5], np.float32), 4)
    with pytest.raises(ValueError, match="canvas must have rank 4"):
        spatial.read_glimpse(canvas[0], np.zeros([2, 3], np.float32), 4)
    with pytest.raises(ValueError, match="glimpse_size must be an int or a pair"):
        spatial.read_glimpse(canvas, np.zeros([2, 3], np.float32), 0)
    with pytest.raises(ValueError, match="glimpse_size must be an int or a pair"):
        spatial.read_glimpse(canvas, np.zeros([2, 3], np.float32), 2.5)
    with pytest.raises(ValueError, match="canvas_size must be an int or a pair"):
        spatial.write_glimpse(canvas, np.zeros([2, 3], np.float32), (4, 4, 4))
    with pytest.raises(ValueError, match="same batch size; received 2 and 3"):
        spatial.read_glimpse(canvas, np.zeros([3, 3], np.float32), 4)
    with pytest.raises(ValueError, match=r"grid must have shape"):
        spatial.bilinear_sample(canvas, np.zeros([2, 4, 4, 3], np.float32))
    with pytest.raises(ValueError, match=r"boxes must have shape \[\.\.\., 4\]"):
        spatial.boxes_to_where(np.zeros([2, 3], np.float32))
