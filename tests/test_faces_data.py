"""Tests for tfssvae.data.faces: the procedural Lambertian faces, their sources and the
Extended Yale B loader."""
import numpy as np
import pytest

from tfssvae.data import faces

SIZE = faces.IMAGE_SIZE


def unit(*xyz):
    vector = np.array(xyz, dtype=np.float64)
    return vector / np.linalg.norm(vector)


def write_pgm(path, pixels, maxval=255, comment=False):
    """Writes ``pixels`` (int [height, width]) as a binary P5 PGM."""
    height, width = pixels.shape
    header = b"P5\n" + (b"# written by the test\n" if comment else b"")
    header += b"%d %d\n%d\n" % (width, height, maxval)
    dtype = ">u2" if maxval > 255 else np.uint8
    path.write_bytes(header + np.asarray(pixels).astype(dtype).tobytes())


# ------------------------------------------------------------------------ lighting

def test_yale_b_grid():
    angles = faces.YALE_B_ANGLES
    assert angles.shape == (64, 2) == (faces.NUM_LIGHTS, 2)
    assert len({tuple(a) for a in angles}) == 64
    # Six lights on the vertical meridian, the rest in mirrored pairs.
    assert np.count_nonzero(angles[:, 0] == 0) == 6
    assert {tuple(a) for a in angles} == {(-a, e) for a, e in angles}
    assert np.count_nonzero(np.abs(angles[:, 0]) > 90) == 14
    assert (130.0, 20.0) in {tuple(a) for a in angles}


def test_azel_conversion_known_directions_and_round_trip():
    vectors = faces.azel_to_vector([0, 90, -90, 0, 0, 180], [0, 0, 0, 90, -90, 0])
    # Exact up to the rounding of sin/cos of multiples of 90 degrees (~1e-16).
    np.testing.assert_allclose(
        vectors, [[0, 0, 1], [1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, -1]],
        atol=1e-12)
    azimuth, elevation = faces.vector_to_azel(
        faces.azel_to_vector(faces.YALE_B_ANGLES[:, 0], faces.YALE_B_ANGLES[:, 1]))
    # The azimuth of E=+90 is undefined and comes back as 0, which the grid uses.
    # float64 trigonometry round trips to ~1e-13 degrees; 1e-9 leaves room.
    np.testing.assert_allclose(np.stack([azimuth, elevation], 1), faces.YALE_B_ANGLES,
                               atol=1e-9)
    # A positive azimuth puts the light on the image's right (+x); positive elevation up.
    x, y, z = faces.azel_to_vector([35], [15])[0]
    assert x > 0 and y > 0 and z > 0


def test_design_lights_are_the_grid_with_back_lights_mirrored():
    lights = faces.DESIGN_LIGHTS
    assert lights.shape == (64, 3) and lights.dtype == np.float32
    # float32 rounding of unit vectors: lengths within a few 1e-8.
    np.testing.assert_allclose(np.linalg.norm(lights, axis=1), 1.0, atol=1e-6)
    assert (lights[:, 2] >= 0).all()
    # 64 distinct directions: the closest two are degrees apart (cos < 0.9999).
    cosines = lights @ lights.T - 2 * np.eye(64)
    assert cosines.max() < 0.9999
    front = np.abs(faces.YALE_B_ANGLES[:, 0]) <= 90
    raw = faces.azel_to_vector(faces.YALE_B_ANGLES[:, 0], faces.YALE_B_ANGLES[:, 1])
    np.testing.assert_allclose(lights[front], raw[front], atol=1e-6)  # float32 rounding
    # A+110E+15 becomes A+070E+15 and A-130E+20 becomes A-050E+20.
    azimuth, elevation = faces.vector_to_azel(lights[~front])
    expected = faces.YALE_B_ANGLES[~front]
    expected_azimuth = np.sign(expected[:, 0]) * (180 - np.abs(expected[:, 0]))
    # float32 storage of the vectors: angles within ~1e-5 degrees.
    np.testing.assert_allclose(azimuth, expected_azimuth, atol=1e-3)
    np.testing.assert_allclose(elevation, expected[:, 1], atol=1e-3)


# ------------------------------------------------------------------------- shading

def test_sphere_shading_matches_lambert():
    radius = 0.9
    u = faces._CENTRES[None, :]
    v = -faces._CENTRES[:, None]  # row 0 is the top: v grows upwards
    rho2 = u ** 2 + v ** 2
    depth = np.sqrt(np.clip(radius ** 2 - rho2, 0.0, None))
    height = depth[None]
    normals = faces.surface_normals(height)
    albedo = np.full((1, SIZE, SIZE), 0.8)
    # Closed form: the sphere's normal at (u, v) is (u, v, sqrt(r^2 - u^2 - v^2)) / r.
    exact_normals = np.stack(np.broadcast_arrays(u, v, depth), -1) / radius
    inner = rho2 <= (0.8 * radius) ** 2
    outside = rho2 >= (radius + faces._PIXEL * 1.5) ** 2
    for light in [unit(0, 0, 1), unit(-0.5, 0.7, 0.5), unit(0.9, -0.2, 0.1),
                  unit(0, 1, 0)]:
        image = faces.shade(normals, albedo, light[None])[0, :, :, 0]
        expected = 0.8 * np.maximum(exact_normals @ light, 0.0)
        # Central differences with spacing 1/32 misplace the normal by at most 1.7e-3
        # per component within 0.8 r (measured; the error grows toward the rim, where
        # the slope is unbounded), so the shading is within sqrt(3) * 1.7e-3 < 5e-3.
        np.testing.assert_allclose(image[inner], expected[inner], atol=5e-3)
        # Far from the sphere the ground is flat: albedo * l_z, up to float32 rounding.
        np.testing.assert_allclose(image[outside], 0.8 * max(light[2], 0.0),
                                   rtol=1e-6, atol=1e-7)
    # The light from straight above lights the upper half only.
    image = faces.shade(normals, albedo, unit(0, 1, 0)[None])[0, :, :, 0]
    assert image[:SIZE // 2][inner[:SIZE // 2]].min() > 0
    assert image[SIZE // 2:][inner[SIZE // 2:]].max() == 0


def test_changing_only_the_light_changes_only_the_shading():
    identity = np.array([5, 5])
    # Mirror-image lights: the flat background (normal (0, 0, 1)) and the surfaces
    # facing away from both (under the chin, the rim) shade the same under both.
    lights = np.stack([unit(-0.8, 0.3, 0.5), unit(0.8, 0.3, 0.5)])
    images = faces.render(identity, lights)[..., 0].astype(np.float64)
    normals, albedo = faces.face_normals_and_albedo(identity)
    # The geometry is the identity's, whatever the light.
    np.testing.assert_array_equal(normals[0], normals[1])
    np.testing.assert_array_equal(albedo[0], albedo[1])
    shading = np.maximum(np.einsum("bhwc,bc->bhw", normals.astype(np.float64),
                                   lights.astype(np.float32).astype(np.float64)), 0)
    # image / albedo is the shading max(0, n . l) for each light; float32 products and
    # the division leave a relative error of a few 1e-7, and albedo >= 0.05 keeps it
    # small in absolute terms.
    np.testing.assert_allclose(images / albedo, shading, atol=1e-5)
    # Where both lights give the same shading (the background, and what is in attached
    # shadow under both), the images are identical; everywhere else they differ by
    # albedo * the difference in shading.
    same = shading[0] == shading[1]
    assert same.sum() > 0 and (~same).sum() > 1000
    np.testing.assert_array_equal(images[0][same], images[1][same])
    np.testing.assert_allclose(images[0] - images[1], albedo[0] * (shading[0] - shading[1]),
                               atol=1e-5)  # float32 rounding, as above


def test_render_is_deterministic_and_identities_differ():
    identities = np.arange(6)
    lights = faces.DESIGN_LIGHTS[[0, 9, 13, 30, 40, 63]]
    a = faces.render(identities, lights)
    assert a.shape == (6, SIZE, SIZE, 1) and a.dtype == np.float32
    assert 0.0 <= a.min() and a.max() <= 1.0
    faces._cached_maps.cache_clear()  # recompute from scratch: same images
    np.testing.assert_array_equal(a, faces.render(identities, lights))
    np.testing.assert_array_equal(a[2:3], faces.render([2], lights[2:3]))
    # Noise is reproducible for a seed and changes with it.
    noisy = faces.render(identities, lights, noise=0.02, rng=7)
    np.testing.assert_array_equal(noisy, faces.render(identities, lights, noise=0.02,
                                                      rng=7))
    assert not np.array_equal(noisy, faces.render(identities, lights, noise=0.02, rng=8))
    # The noise has the requested size (clipping at 0 and 1 shrinks it a little).
    assert 0.012 < np.std(noisy - a) < 0.021
    # Every pair of identities differs under the same frontal light, in shape or albedo.
    front = faces.render(np.arange(12), np.repeat(faces.DESIGN_LIGHTS[:1], 12, 0))
    flat = front.reshape(12, -1)
    distances = np.abs(flat[:, None] - flat[None]).mean(-1) + np.eye(12)
    assert distances.min() > 0.01, distances.min()
    heights, _ = faces.face_maps(np.arange(12))
    height_gaps = np.abs(heights[:, None] - heights[None]).max(axis=(2, 3))
    assert height_gaps[~np.eye(12, dtype=bool)].min() > 0.02
    # A different identity_seed gives different faces for the same ids.
    other = faces.render(identities, lights, identity_seed=1)
    assert np.abs(other - a).mean() > 0.01


def test_faces_fill_the_frame_like_cropped_yale_b():
    height, albedo = faces.face_maps(np.arange(faces.NUM_IDENTITIES))
    assert height.shape == albedo.shape == (faces.NUM_IDENTITIES, SIZE, SIZE)
    assert albedo.min() >= 0.05 and albedo.max() <= 1.0
    on_head = (height > 0).mean(axis=(1, 2))
    assert on_head.min() > 0.4, on_head.min()
    # The border is background (height 0): no face is cut off by the frame.
    assert (height[:, [0, -1], :] == 0).all() and (height[:, :, [0, -1]] == 0).all()


# ------------------------------------------------------------------------- sources

def test_design_splits():
    identities, light_indices = faces.design("train")
    assert len(identities) == 38 * 64
    assert set(identities) == set(range(38))
    assert np.array_equal(np.bincount(light_indices), np.full(64, 38))
    test_ids, _ = faces.design("test")
    assert len(test_ids) == faces.NUM_TEST_IDENTITIES * 64
    assert set(test_ids).isdisjoint(identities)
    with pytest.raises(ValueError, match="split must be one of"):
        faces.design("validation")


def test_faces_dataset_batches():
    dataset = faces.faces_dataset(batch_size=8, seed=3, num_batches=2)
    batches = list(dataset.as_numpy_iterator())
    assert len(batches) == 2
    batch = batches[0]
    assert set(batch) == {"x", "identity", "light"}
    assert batch["x"].shape == (8, 64, 64, 1) and batch["x"].dtype == np.float32
    assert batch["identity"].shape == (8,) and batch["identity"].dtype == np.int32
    assert batch["light"].shape == (8, 3) and batch["light"].dtype == np.float32
    assert 0.0 <= batch["x"].min() and batch["x"].max() <= 1.0
    assert ((batch["identity"] >= 0) & (batch["identity"] < 38)).all()
    # Each light is one of the design's.
    assert (np.abs(batch["light"][:, None] - faces.DESIGN_LIGHTS[None]).max(-1)
            .min(-1) == 0).all()
    # The image is the noiseless render plus noise of about DEFAULT_NOISE.
    clean = faces.render(batch["identity"], batch["light"])
    assert np.abs(batch["x"] - clean).max() < 6 * faces.DEFAULT_NOISE
    again = list(faces.faces_dataset(8, 3, num_batches=2).as_numpy_iterator())
    for first, second in zip(batches, again):
        for key in first:
            np.testing.assert_array_equal(first[key], second[key])
    assert not np.array_equal(batches[0]["x"], batches[1]["x"])
    test_batch = next(faces.faces_dataset(16, 0, split="test", noise=0.0)
                      .as_numpy_iterator())
    assert ((test_batch["identity"] >= 38) & (test_batch["identity"] < 48)).all()


def test_faces_source_epochs_and_resume():
    source = faces.FacesSource(batch_size=4, seed=1, steps_per_epoch=3)
    assert source.examples_per_step == 4
    epoch = list(source.epoch(0).as_numpy_iterator())
    assert len(epoch) == 3
    resumed = list(source.epoch(0, skip_steps=2).as_numpy_iterator())
    np.testing.assert_array_equal(resumed[0]["x"], epoch[2]["x"])
    other = next(source.epoch(1).as_numpy_iterator())
    assert not np.array_equal(other["x"], epoch[0]["x"])


def test_tfds_builder_info_and_examples(tmp_path):
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

    builder_class = faces.ProceduralFaces
    assert builder_class is faces.faces_builder()
    assert builder_class.name == "procedural_faces"
    assert str(builder_class.VERSION) == "1.0.0"
    assert builder_class.MAX_EXAMPLES is None

    class TinyFaces(builder_class, skip_registration=True):
        MAX_EXAMPLES = 6

    builder = TinyFaces(data_dir=str(tmp_path))
    features = builder.info.features
    assert features["image"].shape == (64, 64, 1)
    assert features["identity"].num_classes == 48
    assert features["light_index"].num_classes == 64
    builder.download_and_prepare()
    for split, first_identity in (("train", 0), ("test", 38)):
        assert builder.info.splits[split].num_examples == 6
        examples = list(tfds.as_numpy(builder.as_dataset(split=split)))
        assert len(examples) == 6
        # The first 6 examples of the design: identity slowest, so lights 0..5.
        indices = np.sort([example["light_index"] for example in examples])
        np.testing.assert_array_equal(indices, np.arange(6))
        for example in examples:
            assert example["identity"] == first_identity
            index = example["light_index"]
            np.testing.assert_array_equal(example["light"], faces.DESIGN_LIGHTS[index])
            # azimuth/elevation are of the float32 light: within ~1e-5 degrees.
            np.testing.assert_allclose([example["azimuth"], example["elevation"]],
                                       faces.YALE_B_ANGLES[index], atol=1e-3)
            expected = faces.render([first_identity], faces.DESIGN_LIGHTS[index][None])
            assert example["image"].dtype == np.uint8
            np.testing.assert_array_equal(example["image"],
                                          np.round(255 * expected[0]).astype(np.uint8))


# ------------------------------------------------------------------------- Yale B

LIGHTS = ((0, 0), (-5, 10), (110, -20))  # (azimuth, elevation) of the tiny directory


def tiny_yale_b(root):
    """2 subjects (01 and 03) x 3 lights, 24x20 (height x width) images whose pixel
    value encodes subject, light, row and column; plus an ambient and a .bad file."""
    truth = {}
    for subject in (1, 3):
        folder = root / f"yaleB{subject:02d}"
        folder.mkdir(parents=True)
        for k, (azimuth, elevation) in enumerate(LIGHTS):
            rows, cols = np.mgrid[0:24, 0:20]
            pixels = (subject * 60 + k * 15 + rows + cols) % 256
            name = f"yaleB{subject:02d}_P00A{azimuth:+04d}E{elevation:+03d}.pgm"
            write_pgm(folder / name, pixels, comment=(k == 1))
            truth[name] = pixels
        write_pgm(folder / f"yaleB{subject:02d}_P00_Ambient.pgm", np.zeros((24, 20)))
        (folder / f"yaleB{subject:02d}_P00A+000E+00.pgm.bad").write_bytes(b"junk")
    return truth


def test_yale_b_names_parse():
    assert faces.parse_yale_b_name("yaleB01_P00A-005E+10.pgm") == (1, 0, -5, 10)
    assert faces.parse_yale_b_name("/x/yaleB39_P00A+130E+20.pgm") == (39, 0, 130, 20)
    for bad in ("yaleB01_P00A-5E+10.pgm", "yaleB01_P00A+005E10.pgm", "face.pgm",
                "yaleB01_P00A+005E+10.png"):
        with pytest.raises(ValueError, match="cannot parse the Yale B file name"):
            faces.parse_yale_b_name(bad)
    with pytest.raises(ValueError, match="elevation in \\[-90, 90\\]"):
        faces.parse_yale_b_name("yaleB01_P00A+005E+95.pgm")


def test_read_pgm_8_and_16_bit(tmp_path):
    pixels = np.arange(12).reshape(3, 4) * 20
    write_pgm(tmp_path / "a.pgm", pixels, comment=True)
    # n / 255 in float32: exact up to one rounding.
    np.testing.assert_allclose(faces.read_pgm(tmp_path / "a.pgm"), pixels / 255,
                               rtol=1e-6)
    wide = np.array([[0, 1000], [40000, 65535]])
    write_pgm(tmp_path / "b.pgm", wide, maxval=65535)
    np.testing.assert_allclose(faces.read_pgm(tmp_path / "b.pgm"), wide / 65535,
                               rtol=1e-6)  # float32 rounding


def test_load_yale_b_tiny_directory(tmp_path):
    truth = tiny_yale_b(tmp_path)
    data = faces.load_yale_b(tmp_path, image_size=20)
    assert data["x"].shape == (6, 20, 20, 1) and data["x"].dtype == np.float32
    np.testing.assert_array_equal(data["subject"], [1, 1, 1, 3, 3, 3])
    np.testing.assert_array_equal(data["identity"], [0, 0, 0, 1, 1, 1])
    assert data["identity"].dtype == np.int32 and data["light"].dtype == np.float32
    names = sorted(truth)
    for row, name in enumerate(names):
        _, _, azimuth, elevation = faces.parse_yale_b_name(name)
        assert (data["azimuth"][row], data["elevation"][row]) == (azimuth, elevation)
        # 24 rows cropped to the middle 20: rows 2..21; n / 255 in float32.
        np.testing.assert_allclose(data["x"][row, :, :, 0], truth[name][2:22] / 255,
                                   rtol=1e-6)
    by_angle = {(a, e): light for a, e, light in
                zip(data["azimuth"], data["elevation"], data["light"])}
    # Closed form, float32 storage: 1e-6.
    np.testing.assert_allclose(by_angle[(0, 0)], [0, 0, 1], atol=1e-6)
    s, c = np.sin(np.radians(10)), np.cos(np.radians(10))
    np.testing.assert_allclose(by_angle[(-5, 10)],
                               [-c * np.sin(np.radians(5)), s, c * np.cos(np.radians(5))],
                               atol=1e-6)
    back = by_angle[(110, -20)]
    assert back[0] > 0 and back[1] < 0 and back[2] < 0  # behind the image plane
    np.testing.assert_allclose(faces.mirror_to_front(back[None])[0],
                               back * [1, 1, -1], atol=1e-6)
    # Resizing keeps values in [0, 1] and the average brightness (bilinear averaging
    # of a smooth ramp: within 2 grey levels).
    small = faces.load_yale_b(tmp_path, image_size=8)
    assert small["x"].shape == (6, 8, 8, 1)
    assert 0 <= small["x"].min() and small["x"].max() <= 1
    np.testing.assert_allclose(small["x"].mean(axis=(1, 2, 3)),
                               data["x"].mean(axis=(1, 2, 3)), atol=2 / 255)
    flipped = faces.load_yale_b(tmp_path, image_size=20, flip_azimuth=True)
    np.testing.assert_array_equal(flipped["azimuth"], -data["azimuth"])


# ----------------------------------------------------------------------- bad input

@pytest.mark.parametrize("lights, match", [
    ([[0.0, 0.0, 2.0]], "must be unit vectors"),
    ([[0.1, 0.1, 0.9]], "must be unit vectors"),
    ([[0.0, 0.6, -0.8]], "below the horizon"),
    ([[0.0, 0.0, 1.0, 0.0]], r"shape \[batch, 3\]"),
    ([0.0, 0.0, 1.0], r"shape \[batch, 3\]"),
    ([[np.nan, 0.0, 1.0]], "finite"),
])
def test_bad_lights(lights, match):
    with pytest.raises(ValueError, match=match):
        faces.check_lights(lights)
    with pytest.raises(ValueError, match=match):
        faces.render([0], lights)


def test_render_bad_arguments():
    light = faces.DESIGN_LIGHTS[:1]
    with pytest.raises(ValueError, match="must have 2 rows"):
        faces.render([0, 1], light)
    with pytest.raises(ValueError, match="identities must be >= 0"):
        faces.render([-1], light)
    with pytest.raises(ValueError, match="identities must be integers"):
        faces.render([0.5], light)
    with pytest.raises(ValueError, match="rng must be given"):
        faces.render([0], light, noise=0.1)
    with pytest.raises(ValueError, match="noise must be >= 0"):
        faces.render([0], light, noise=-0.1, rng=0)
    with pytest.raises(ValueError, match="elevation must be in"):
        faces.azel_to_vector([0], [100])
    # Horizon lights are allowed (z = cos 90 degrees, rounding to about 0).
    faces.render([0], faces.azel_to_vector([90], [0]))


def test_load_yale_b_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError):
        faces.load_yale_b(tmp_path / "missing")
    (tmp_path / "yaleB01").mkdir()
    with pytest.raises(ValueError, match="holds no Yale B images"):
        faces.load_yale_b(tmp_path)
    # Ambient images alone do not count.
    write_pgm(tmp_path / "yaleB01" / "yaleB01_P00_Ambient.pgm", np.zeros((4, 4)))
    with pytest.raises(ValueError, match="holds no Yale B images"):
        faces.load_yale_b(tmp_path)
    write_pgm(tmp_path / "yaleB01" / "yaleB01_P00A+00E+00.pgm", np.zeros((4, 4)))
    with pytest.raises(ValueError, match="cannot parse .*'yaleB01_P00A\\+00E\\+00.pgm'"):
        faces.load_yale_b(tmp_path)
    (tmp_path / "yaleB01" / "yaleB01_P00A+00E+00.pgm").unlink()
    path = tmp_path / "yaleB01" / "yaleB01_P00A+000E+00.pgm"
    path.write_bytes(b"P2\n4 4\n255\n" + b"0 " * 16)
    with pytest.raises(ValueError, match="not a binary PGM"):
        faces.load_yale_b(tmp_path)
    path.write_bytes(b"P5\n4 4\n255\n" + bytes(10))
    with pytest.raises(ValueError, match="truncated"):
        faces.load_yale_b(tmp_path)
    path.write_bytes(b"P5\n4 x\n255\n" + bytes(16))
    with pytest.raises(ValueError, match="height must be a positive integer"):
        faces.load_yale_b(tmp_path)
