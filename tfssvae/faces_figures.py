"""PNG figures of a trained intrinsic-faces model (issue 12), beside the renderer's truth.

Every figure is a grid of 64x64 cells (``figures.tile``: 1 px white gaps), enlarged
``scale`` times, under ``len(caption)`` caption lines of ``figures.CAPTION_LINE`` pixels that say
what the rows and columns are.  Lights are named by Yale B (azimuth, elevation) in
degrees and turned into vectors by the data's own convention (``faces.azel_to_vector``,
then ``faces.mirror_to_front`` for |azimuth| > 90), so the model's panels and the
renderer's are lit by the very same vectors.  The model's identity ``k`` is the design's
training identity ``k`` (identities are supervised by their ids), so the truth of a
generated face is ``faces.render([k], lights)``; the model generates at each identity's
mean inferred style (``identity_styles``), so every figure is deterministic.

* ``lighting_figure``: one identity, lights over the hemisphere (``faces_lighting.png``).
* ``identity_figure``: one row of identities a light (``faces_identity.png``).
* ``relight_figure``: unseen (test) identities relit from one image (``faces_relight.png``).
* ``intrinsics_figure``: inferred normals (as RGB) and albedo (``faces_intrinsics.png``;
  the intrinsic decoder only).
"""
import os

import numpy as np

from tfssvae import figures
from tfssvae.data import faces

#: Default grids, (azimuth, elevation) in degrees within Extended Yale B's range.  Rows go
#: from light above to light below, columns from the image's left to its right.
LIGHTING_AZIMUTHS = (-85, -60, -35, -10, 10, 35, 60, 85)
LIGHTING_ELEVATIONS = (65, 40, 15, 0, -20, -40)
#: Four lights of the design: frontal, from the left, from the right, from above.
IDENTITY_LIGHTS = ((0, 0), (-70, 0), (70, 0), (0, 45))
#: The input of the relighting figure (frontal, as a passport photo) and its targets.
RELIGHT_INPUT = (0, 0)
RELIGHT_TARGETS = ((-85, 20), (-50, 0), (-20, -10), (0, 45), (20, -10), (50, 0), (85, 20))


def lights_from_angles(angles, name="angles"):
    """(azimuth, elevation) degrees ``[n, 2]`` -> float32 unit lights ``[n, 3]`` with z >= 0.

    The data's convention (``faces.azel_to_vector``; azimuth positive toward the image's
    right, elevation up), lights behind the image plane folded in front as the design does.
    """
    angles = np.asarray(angles, np.float64)
    if angles.ndim != 2 or angles.shape[1] != 2 or not len(angles):
        raise ValueError(f"{name}: expected (azimuth, elevation) pairs in degrees [n >= 1, 2], "
                         f"received shape {angles.shape}")
    try:
        vectors = faces.azel_to_vector(angles[:, 0], angles[:, 1])
    except ValueError as error:
        raise ValueError(f"{name}: {error}") from None
    return faces.mirror_to_front(vectors).astype(np.float32)


def _check(model, scale):
    if not (hasattr(model, "generate") and hasattr(model, "relight") and hasattr(model, "style_dim")):
        raise ValueError(f"model: expected a FacesModel, received {type(model).__name__}")
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1:
        raise ValueError(f"scale: expected an integer >= 1 (pixels a model pixel), received {scale!r}")


def _identities(values, name, upper=None):
    ids = np.asarray(values)
    if ids.ndim != 1 or not len(ids) or not np.issubdtype(ids.dtype, np.integer) or ids.min() < 0 \
            or (upper is not None and ids.max() >= upper):
        bound = f" in [0, {upper})" if upper is not None else " >= 0"
        raise ValueError(f"{name}: expected a non-empty list of integer ids{bound}, received {values!r}")
    return ids.astype(np.int32)


def identity_styles(model, identities):
    """Each identity's style: the mean of q(style | x) over its 64 noiseless design renders.

    The style the figures generate with.  The prior mean 0 was the first choice, but the
    trained models' posterior styles sit far from it (their KL is about 20 nats over 4
    dimensions), so faces generated at style 0 were blurred averages without directional
    shading, while the same decoder relit real images well.  Averaging over the 64 lights
    keeps what the style holds of the identity and drops what it holds of one image.

    Args:
      model: a ``FacesModel``.
      identities: int ``[n]`` training identities.

    Returns:
      float32 ``[n, style_dim]``.
    """
    ids = np.asarray(identities, np.int32)
    unique, index = np.unique(ids, return_inverse=True)
    lights = len(faces.DESIGN_LIGHTS)
    images = faces.render(np.repeat(unique, lights), np.tile(faces.DESIGN_LIGHTS, (len(unique), 1)))
    styles = model.encode(images)["style"].numpy().reshape(len(unique), lights, model.style_dim).mean(axis=1)
    return styles[index].astype(np.float32)


def _generate(model, identities, lights):
    """The model's faces at each identity's style (``identity_styles``): ``[n, 64, 64, 1]`` numpy."""
    return model.generate(identities, lights, identity_styles(model, identities))["images"].numpy()


def _degrees(angles):
    return " ".join(f"({a:+g},{e:+g})" for a, e in angles)


def lighting_figure(model, path, identity=0, azimuths=LIGHTING_AZIMUTHS, elevations=LIGHTING_ELEVATIONS,
                    scale=2):
    """One identity under lights over the hemisphere: the model's faces, then the truth.

    Grid ``[len(elevations), 2 * len(azimuths) + 1, 64, 64, 1]``: row ``r`` is lit from
    elevation ``elevations[r]``; columns ``0 .. A-1`` are ``model.generate(identity, light,
    its mean style)`` at ``azimuths``, column ``A`` is blank (white) and columns ``A+1 .. 2A`` are
    ``faces.render(identity, light)`` at the same lights.

    Args:
      model: a trained ``FacesModel``.
      path: where the PNG goes.
      identity: a training identity in [0, K).
      azimuths, elevations: degrees (|elevation| <= 90).
      scale: enlargement, pixels a model pixel.

    Returns:
      ``path``.
    """
    _check(model, scale)
    ids = _identities([identity], "identity", model.num_classes)
    azimuths, elevations = np.asarray(azimuths, np.float64), np.asarray(elevations, np.float64)
    if azimuths.ndim != 1 or elevations.ndim != 1 or not azimuths.size or not elevations.size:
        raise ValueError(f"azimuths, elevations: expected non-empty lists of degrees, received shapes "
                         f"{azimuths.shape} and {elevations.shape}")
    angles = np.stack(np.meshgrid(azimuths, elevations), axis=-1).reshape(-1, 2)  # elevation-major
    lights = lights_from_angles(angles, "azimuths, elevations")
    ids = np.repeat(ids, len(lights))
    shape = (len(elevations), len(azimuths), *faces.IMAGE_SHAPE)
    model_faces = _generate(model, ids, lights).reshape(shape)
    truth = faces.render(ids, lights).reshape(shape)
    blank = np.ones((len(elevations), 1, *faces.IMAGE_SHAPE), np.float32)
    caption = [f"identity {int(ids[0])}: left the model (its mean style), right the renderer's truth",
               f"columns: azimuth {', '.join(f'{a:+g}' for a in azimuths)} degrees (+ lights the image's right)",
               f"rows: elevation {', '.join(f'{e:+g}' for e in elevations)} degrees"]
    grid = np.concatenate([model_faces, blank, truth], axis=1)
    return figures.save_png(path, figures.tile(grid), scale, caption)


def identity_figure(model, path, identities=None, lights=IDENTITY_LIGHTS, scale=2):
    """Identities side by side under fixed lights: for each light a row of the model's faces
    and, under it, a row of the truth.

    Grid ``[2 * len(lights), len(identities), 64, 64, 1]``: row ``2 i`` holds
    ``model.generate(identities, lights[i], identity_styles(identities))``, row ``2 i + 1``
    ``faces.render(identities, lights[i])``.

    Args:
      model: a trained ``FacesModel``.
      path: where the PNG goes.
      identities: training identities in [0, K); default 10 spread over them.
      lights: (azimuth, elevation) pairs in degrees ``[L, 2]``.
      scale: enlargement.

    Returns:
      ``path``.
    """
    _check(model, scale)
    if identities is None:
        identities = np.linspace(0, model.num_classes - 1, min(10, model.num_classes)).round().astype(int)
    ids = _identities(identities, "identities", model.num_classes)
    vectors = lights_from_angles(lights, "lights")
    rows_ids = np.tile(ids, len(vectors))
    rows_lights = np.repeat(vectors, len(ids), axis=0)
    shape = (len(vectors), len(ids), *faces.IMAGE_SHAPE)
    model_faces = _generate(model, rows_ids, rows_lights).reshape(shape)
    truth = faces.render(rows_ids, rows_lights).reshape(shape)
    grid = np.stack([model_faces, truth], axis=1).reshape(2 * len(vectors), len(ids), *faces.IMAGE_SHAPE)
    caption = [f"columns: identities {', '.join(str(int(i)) for i in ids)}",
               f"row pairs, model (each identity's mean style) over truth, lit from (azimuth, elevation) "
               f"{_degrees(lights)}"]
    return figures.save_png(path, figures.tile(grid), scale, caption)


def relight_inputs(identities, input_light=RELIGHT_INPUT, noise=faces.DEFAULT_NOISE, seed=0):
    """The relighting figure's inputs: ``faces.render(identities, input light)`` with pixel
    noise from ``seed`` (as the model saw in training): float32 ``[n, 64, 64, 1]``."""
    light = lights_from_angles([input_light], "input_light")
    ids = _identities(identities, "identities")
    return faces.render(ids, np.repeat(light, len(ids), axis=0), noise=noise, rng=np.random.default_rng([seed, 12]))


def relight_figure(model, path, identities=None, input_light=RELIGHT_INPUT, targets=RELIGHT_TARGETS,
                   noise=faces.DEFAULT_NOISE, seed=0, scale=2):
    """Unseen identities relit from one image each, beside their true renderings.

    For each identity, two rows of ``1 + T`` cells (``T = len(targets)``): the top row holds
    the input (``relight_inputs``: the face under ``input_light`` with pixel noise), then
    ``model.relight(input, target light)`` for each target; the bottom row a blank cell,
    then ``faces.render(identity, target light)`` (noiseless), the truth.  Grid
    ``[2 * n, 1 + T, 64, 64, 1]``.

    Args:
      model: a trained ``FacesModel``.
      path: where the PNG goes.
      identities: face ids (any id >= 0 renders a face); default the first five test
        identities (``faces.split_identities("test")``), never seen in training.
      input_light: (azimuth, elevation) degrees of the input image.
      targets: (azimuth, elevation) degrees ``[T, 2]`` to relight to.
      noise, seed: the input's pixel noise and its seed.
      scale: enlargement.

    Returns:
      ``path``.
    """
    _check(model, scale)
    if identities is None:
        identities = faces.split_identities("test")[:5]
    ids = _identities(identities, "identities")
    vectors = lights_from_angles(targets, "targets")
    inputs = relight_inputs(ids, input_light, noise, seed)
    n, t = len(ids), len(vectors)
    relit = model.relight(np.repeat(inputs, t, axis=0), np.tile(vectors, (n, 1)))["images"].numpy()
    truth = faces.render(np.repeat(ids, t), np.tile(vectors, (n, 1)))
    top = np.concatenate([inputs[:, None], relit.reshape(n, t, *faces.IMAGE_SHAPE)], axis=1)
    bottom = np.concatenate([np.ones_like(inputs)[:, None], truth.reshape(n, t, *faces.IMAGE_SHAPE)], axis=1)
    grid = np.stack([top, bottom], axis=1).reshape(2 * n, 1 + t, *faces.IMAGE_SHAPE)
    caption = [f"identities {', '.join(str(int(i)) for i in ids)} (row pairs): the input, lit from "
               f"{_degrees([input_light])}, then model.relight over the truth",
               f"target (azimuth, elevation) degrees: {_degrees(targets)}"]
    return figures.save_png(path, figures.tile(grid), scale, caption)


def intrinsics_figure(model, path, identities=None, input_light=RELIGHT_INPUT, noise=faces.DEFAULT_NOISE,
                      seed=0, scale=2):
    """What the intrinsic decoder infers from an image: normals (as RGB) and albedo.

    One row an identity, six RGB cells: the input (``relight_inputs``), the
    reconstruction (``model.render`` at q's identity probabilities, mean light and mean
    style), the inferred normals ``(n + 1) / 2`` (x red, y green, z blue), the inferred
    albedo, the true normals and the true albedo (``faces.face_normals_and_albedo``).
    Grid ``[n, 6, 64, 64, 3]``.

    Args:
      model: a trained ``FacesModel`` with ``decoder="intrinsic"``.
      path, identities, input_light, noise, seed, scale: as ``relight_figure``.

    Returns:
      ``path``.
    """
    _check(model, scale)
    if model.decoder != "intrinsic":
        raise ValueError(f"model: expected the intrinsic decoder (normals and albedo), received decoder "
                         f"{model.decoder!r}")
    if identities is None:
        identities = faces.split_identities("test")[:5]
    ids = _identities(identities, "identities")
    inputs = relight_inputs(ids, input_light, noise, seed)
    code = model.encode(inputs)
    inferred = model.render(code["identity_probabilities"], code["light"], code["style"])
    true_normals, true_albedo = faces.face_normals_and_albedo(ids)

    def rgb(grey):
        return np.repeat(np.asarray(grey, np.float32), 3, axis=-1)

    cells = [rgb(inputs), rgb(inferred["images"].numpy()), (inferred["normals"].numpy() + 1) / 2,
             rgb(inferred["albedo"].numpy()), (true_normals + 1) / 2, rgb(true_albedo[..., None])]
    caption = [f"identities {', '.join(str(int(i)) for i in ids)} (rows), lit from {_degrees([input_light])}",
               "input, reconstruction, inferred normals (RGB = (xyz + 1) / 2), inferred albedo, "
               "true normals, true albedo"]
    return figures.save_png(path, figures.tile(np.stack(cells, axis=1)), scale, caption)


def write_all(model, directory, scale=2):
    """The faces figures of ``model`` into ``directory``: ``faces_lighting.png``,
    ``faces_identity.png``, ``faces_relight.png`` and, for the intrinsic decoder,
    ``faces_intrinsics.png``.  Returns the paths written."""
    paths = [lighting_figure(model, os.path.join(directory, "faces_lighting.png"), scale=scale),
             identity_figure(model, os.path.join(directory, "faces_identity.png"), scale=scale),
             relight_figure(model, os.path.join(directory, "faces_relight.png"), scale=scale)]
    if model.decoder == "intrinsic":
        paths.append(intrinsics_figure(model, os.path.join(directory, "faces_intrinsics.png"), scale=scale))
    return paths
