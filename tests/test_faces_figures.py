"""The intrinsic-faces figures (issue 12): sizes, layouts and what their cells hold."""
import os

import keras
import numpy as np
import pytest
from PIL import Image

from tfssvae import configs, experiment, faces_figures, figures
from tfssvae.data import faces
from tfssvae.models import FacesModel

K = faces.NUM_TRAIN_IDENTITIES
TINY = dict(style_dim=2, filters=(4, 8, 8, 8), dense_units=16, decoder_filters=(8, 8, 8))
SIZE = faces.IMAGE_SIZE
# One grey level: the figure and the test reach the same float32 images by different
# float paths (angles -> vectors in float64 here, the same or TF ops there), and a value
# within 1e-6 of a rounding boundary of 255 * x may land on either side of it.
GREY_LEVEL = 1


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return FacesModel(faces.IMAGE_SHAPE, K, **TINY)


def read(path, rows, cols, scale, mode="L"):
    """The PNG's cells as uint8 ``[rows, cols, 64, 64(, 3)]`` and its caption height, checking
    the pixel size: the tiled grid (1 px gaps) times ``scale`` under whole caption lines."""
    image = np.asarray(Image.open(path).convert(mode))
    width, grid_height = scale * (cols * (SIZE + 1) + 1), scale * (rows * (SIZE + 1) + 1)
    assert image.shape[1] == width
    caption = image.shape[0] - grid_height
    assert caption > 0 and caption % figures.CAPTION_LINE == 0
    cells = np.stack([np.stack([
        image[caption + scale * (1 + r * (SIZE + 1)):][:SIZE * scale:scale, scale * (1 + c * (SIZE + 1)):][:, :SIZE * scale:scale]
        for c in range(cols)]) for r in range(rows)])
    return cells, caption


def grey(images):
    """float images ``[..., 64, 64, 1]`` as the PNG stores them: uint8 ``[..., 64, 64]``."""
    return np.round(np.clip(np.asarray(images, np.float64)[..., 0], 0, 1) * 255).astype(np.int16)


def azel(angles):
    angles = np.asarray(angles, np.float64)
    return faces.azel_to_vector(angles[:, 0], angles[:, 1]).astype(np.float32)


def test_the_relighting_figure_shows_the_input_the_relit_faces_and_the_true_renderings(model, tmp_path):
    ids = [38, 45]  # test identities, never in the training design
    targets = ((-70, 0), (0, 45), (35, -20), (85, 20))
    path = faces_figures.relight_figure(model, str(tmp_path / "relight.png"), identities=ids, targets=targets,
                                        scale=3)
    cells, _ = read(path, rows=4, cols=5, scale=3)
    cells = cells.astype(np.int16)
    inputs = faces_figures.relight_inputs(ids)
    lights = azel(targets)
    for row, identity in enumerate(ids):
        top, bottom = cells[2 * row], cells[2 * row + 1]
        truth = grey(faces.render([identity] * len(targets), lights))
        # The truth is the renderer's at these lights: with azimuth toward the image's right
        # (a mirrored or swapped convention would light the other cheek: checked below).
        np.testing.assert_allclose(bottom[1:], truth, atol=GREY_LEVEL, rtol=0)
        assert np.all(bottom[0] == 255)  # blank under the input
        np.testing.assert_allclose(top[0], grey(inputs[row]), atol=GREY_LEVEL, rtol=0)
        relit = model.relight(np.repeat(inputs[row:row + 1], len(targets), 0), lights)["images"].numpy()
        np.testing.assert_allclose(top[1:], grey(relit), atol=GREY_LEVEL, rtol=0)
    # The comparison can fail: lit from (+70, 0) the first truth would differ from the
    # cell lit from (-70, 0) by far more than a grey level.
    mirrored = grey(faces.render([ids[0]], azel([(70, 0)])))[0]
    assert np.abs(mirrored - cells[1, 1]).mean() > 20
    # The input is the face of identity 38 lit from the front, with the training noise.
    clean = faces.render([38], azel([faces_figures.RELIGHT_INPUT]))
    assert 0.003 < np.std(inputs[0] - clean) < 0.02


def test_the_lighting_figure_varies_the_light_over_a_grid_for_one_identity(model, tmp_path):
    azimuths, elevations = (-60, 0, 60), (40, 0, -20)
    path = faces_figures.lighting_figure(model, str(tmp_path / "lighting.png"), identity=7, azimuths=azimuths,
                                         elevations=elevations, scale=1)
    cells, _ = read(path, rows=3, cols=7, scale=1)
    cells = cells.astype(np.int16)
    # The identity's style: q(style | x)'s mean averaged over its 64 design renders.
    renders = faces.render(np.full(len(faces.DESIGN_LIGHTS), 7), faces.DESIGN_LIGHTS)
    style = model.encode(renders)["style"].numpy().mean(axis=0, keepdims=True)
    for r, elevation in enumerate(elevations):
        for c, azimuth in enumerate(azimuths):
            light = azel([(azimuth, elevation)])
            np.testing.assert_allclose(cells[r, 4 + c], grey(faces.render([7], light))[0], atol=GREY_LEVEL, rtol=0)
            generated = model.generate([7], light, style)["images"].numpy()
            np.testing.assert_allclose(cells[r, c], grey(generated)[0], atol=GREY_LEVEL, rtol=0)
        assert np.all(cells[r, 3] == 255)  # the gap between the model and the truth
    # Lit from the image's right, the right half of the truth is the brighter.
    assert cells[1, 6][:, 32:].mean() > cells[1, 6][:, :32].mean() + 20


def test_the_identity_figure_and_the_defaults_have_their_sizes(model, tmp_path):
    ids = [0, 3, 9, 20, 37]
    path = faces_figures.identity_figure(model, str(tmp_path / "identity.png"), identities=ids, scale=2)
    cells, _ = read(path, rows=2 * len(faces_figures.IDENTITY_LIGHTS), cols=len(ids), scale=2)
    truth = grey(faces.render(ids, np.repeat(azel(faces_figures.IDENTITY_LIGHTS[1:2]), len(ids), 0)))
    np.testing.assert_allclose(cells[3].astype(np.int16), truth, atol=GREY_LEVEL, rtol=0)  # light 1's truth row

    written = faces_figures.write_all(model, str(tmp_path))
    names = [os.path.basename(p) for p in written]
    assert names == ["faces_lighting.png", "faces_identity.png", "faces_relight.png", "faces_intrinsics.png"]
    read(written[0], len(faces_figures.LIGHTING_ELEVATIONS), 2 * len(faces_figures.LIGHTING_AZIMUTHS) + 1, 2)
    read(written[1], 2 * len(faces_figures.IDENTITY_LIGHTS), 10, 2)
    read(written[2], 10, 1 + len(faces_figures.RELIGHT_TARGETS), 2)
    cells, _ = read(written[3], 5, 6, 2, mode="RGB")
    # The true normals' cell: (n + 1) / 2 of the renderer's normals.
    normals, _ = faces.face_normals_and_albedo([38])
    np.testing.assert_allclose(cells[0, 4].astype(np.int16), np.round((normals[0] + 1) / 2 * 255),
                               atol=GREY_LEVEL, rtol=0)
    # Deterministic: the same model writes the same bytes.
    again = faces_figures.relight_figure(model, str(tmp_path / "again.png"))
    assert open(again, "rb").read() == open(written[2], "rb").read()


def test_a_run_writes_the_figures_into_its_model_directory(tmp_path):
    config = configs.get("faces:tiny",
                         {"model_dir": str(tmp_path / "run"), "export": False, "verbose": 0})
    experiment.run(config)
    for name in ("faces_lighting.png", "faces_identity.png", "faces_relight.png", "faces_intrinsics.png"):
        assert os.path.getsize(tmp_path / "run" / name) > 0


def test_bad_arguments_are_value_errors(model, tmp_path):
    path = str(tmp_path / "x.png")
    with pytest.raises(ValueError, match="identity"):
        faces_figures.lighting_figure(model, path, identity=K)
    with pytest.raises(ValueError, match="scale"):
        faces_figures.relight_figure(model, path, scale=0)
    with pytest.raises(ValueError, match="targets"):
        faces_figures.relight_figure(model, path, targets=[(0, 100)])
    with pytest.raises(ValueError, match="targets"):
        faces_figures.relight_figure(model, path, targets=[0, 10])
    with pytest.raises(ValueError, match="intrinsic"):
        faces_figures.intrinsics_figure(FacesModel(faces.IMAGE_SHAPE, K, decoder="plain", **TINY), path)


def test_identity_styles_are_each_identitys_mean_posterior_style(model):
    styles = faces_figures.identity_styles(model, [3, 7, 3])
    for row, identity in ((0, 3), (1, 7)):
        renders = faces.render(np.full(len(faces.DESIGN_LIGHTS), identity), faces.DESIGN_LIGHTS)
        expected = model.encode(renders)["style"].numpy().mean(axis=0)
        # float32 means of 64 values reached through batches of another size: 1e-5 is
        # far above their rounding and far below the styles' differences from 0.
        np.testing.assert_allclose(styles[row], expected, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(styles[0], styles[2])
    assert np.abs(styles[1]).max() > 1e-3  # not the prior mean the figures used to take
