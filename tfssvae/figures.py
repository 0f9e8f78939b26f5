"""PNG figures of class/style disentanglement, from any model exported with ``generate`` and ``encode``.

Siddharth et al. (2017) show two kinds of grid: the class fixed along a column while the
style z varies down it, and analogies, where the style of a real image is kept and the
class is swapped.  Both need only the SavedModel's ``encode`` (images -> mean) and
``generate`` (labels, latent -> images) signatures, so they work for M2 and ssdgm models.  ``decomposition`` shows how a
multi-digit model explains canvases (its ``decompose`` and ``reconstruct`` outputs).
"""
import numpy as np
from PIL import Image, ImageDraw


def tile(images, pad=1):
    """``[rows, cols, H, W, C]`` floats in [0, 1] -> a uint8 ``[rows * (H + pad) + pad, cols * (W + pad) + pad, C]`` mosaic."""
    images = np.asarray(images, np.float32)
    if images.ndim != 5:
        raise ValueError(f"images: expected [rows, cols, height, width, channels], received shape {images.shape}")
    rows, cols, height, width, channels = images.shape
    canvas = np.ones((rows * (height + pad) + pad, cols * (width + pad) + pad, channels), np.float32)
    for r in range(rows):
        for c in range(cols):
            top, left = pad + r * (height + pad), pad + c * (width + pad)
            canvas[top:top + height, left:left + width] = images[r, c]
    return np.round(np.clip(canvas, 0.0, 1.0) * 255).astype(np.uint8)


#: Pixels a caption line takes above a figure (PIL's default font is about 11 px high).
CAPTION_LINE = 14


def save_png(path, mosaic, scale=4, caption=()):
    """Writes a uint8 ``[H, W, C]`` mosaic, enlarged ``scale`` times (small digits are hard to
    see), under the lines of ``caption`` (``CAPTION_LINE`` pixels each, black on white)."""
    image = Image.fromarray(mosaic[..., 0] if mosaic.shape[-1] == 1 else mosaic)
    image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    if caption:
        top = CAPTION_LINE * len(caption)
        captioned = Image.new(image.mode, (image.width, image.height + top), "white")
        captioned.paste(image, (0, top))
        draw = ImageDraw.Draw(captioned)
        for i, line in enumerate(caption):
            draw.text((2, i * CAPTION_LINE + 1), line, fill="black")
        image = captioned
    image.save(path)
    return path


def class_style_grid(generate, num_classes, latent_dim, num_styles=8, seed=0):
    """Rows: ``num_styles`` styles z ~ N(0, I); columns: the classes.  Returns ``[styles, classes, H, W, C]``.

    ``generate(labels int32 [n], latent float32 [n, latent_dim])`` returns images ``[n, H, W, C]``.
    """
    latent = np.random.default_rng(seed).standard_normal((num_styles, latent_dim)).astype(np.float32)
    labels = np.tile(np.arange(num_classes, dtype=np.int32), num_styles)
    images = np.asarray(generate(labels, np.repeat(latent, num_classes, axis=0)))
    return images.reshape(num_styles, num_classes, *images.shape[1:])


def analogies(encode, generate, images, num_classes):
    """Row i: the real image i, then its style (posterior mean z) rendered as every class.

    Returns ``[len(images), 1 + num_classes, H, W, C]``.
    """
    images = np.asarray(images, np.float32)
    style = np.asarray(encode(images))
    labels = np.tile(np.arange(num_classes, dtype=np.int32), len(images))
    swapped = np.asarray(generate(labels, np.repeat(style, num_classes, axis=0)))
    swapped = swapped.reshape(len(images), num_classes, *images.shape[1:])
    return np.concatenate([images[:, None], swapped], axis=1)


def class_effect(encode, generate, images, num_classes):
    """How much a decoder's image depends on its class: the analogies' numbers.

    Each image's style z (``encode(images)`` -> ``(z [n, d], class int [n])``, the class
    the style was inferred with) is rendered as every class (``generate``: pixel means in
    [0, 1]), and the image's Bernoulli log-likelihood under each rendering is compared.

    Returns:
      dict: ``gap_nats``, the mean over images of log p(x | its class, z) minus the mean
      of log p(x | k, z) over the other classes k (0 when the decoder ignores the class);
      ``own_class_best``, the fraction of images whose own class gives the highest likelihood.
    """
    images = np.asarray(images, np.float32)
    style, own = encode(images)
    labels = np.tile(np.arange(num_classes, dtype=np.int32), len(images))
    means = np.asarray(generate(labels, np.repeat(np.asarray(style), num_classes, axis=0)), np.float64)
    means = np.clip(means.reshape(len(images), num_classes, -1), 1e-6, 1 - 1e-6)
    x = images.reshape(len(images), 1, -1)
    log_likelihood = np.sum(x * np.log(means) + (1 - x) * np.log1p(-means), axis=-1)  # [n, K]
    own = np.asarray(own).astype(int)
    mine = log_likelihood[np.arange(len(images)), own]
    others = (log_likelihood.sum(axis=1) - mine) / (num_classes - 1)
    return {"gap_nats": float(np.mean(mine - others)),
            "own_class_best": float(np.mean(log_likelihood.argmax(axis=1) == own))}


def swap_grid(encode, generate, images):
    """Content from the row's image, style from the column's (ML-VAE).

    ``encode(images)`` returns ``(content, style)``; ``generate(content, style)`` images.
    Returns ``[n + 1, n + 1, H, W, C]``: the top row holds the style sources, the left
    column the content sources, the top-left corner is blank.
    """
    images = np.asarray(images, np.float32)
    n = len(images)
    content, style = encode(images)
    rows, cols = np.repeat(np.arange(n), n), np.tile(np.arange(n), n)
    swapped = np.asarray(generate(content[rows], style[cols])).reshape(n, n, *images.shape[1:])
    grid = np.zeros((n + 1, n + 1, *images.shape[1:]), np.float32)
    grid[0, 1:], grid[1:, 0], grid[1:, 1:] = images, images, swapped
    return grid


def interpolation(encode, generate, first, second, steps=8):
    """Row 0: content moves from ``first``'s to ``second``'s, style of ``first``; row 1: the
    style moves, content of ``first``.  Returns ``[2, steps, H, W, C]``."""
    (content, style) = encode(np.stack([first, second]).astype(np.float32))
    t = np.linspace(0.0, 1.0, steps, dtype=np.float32)[:, None]
    moving_content = (1 - t) * content[0] + t * content[1]
    moving_style = (1 - t) * style[0] + t * style[1]
    rows = [generate(moving_content, np.repeat(style[:1], steps, axis=0)),
            generate(np.repeat(content[:1], steps, axis=0), moving_style)]
    return np.stack([np.asarray(r) for r in rows])


def traversal(generate, latent_dim, discrete_size, values=np.linspace(-2.0, 2.0, 9)):
    """CascadeVAE traversals: one row per (value of d, continuous dimension i), z_i swept
    over ``values`` with the other dimensions at the prior mean 0.

    ``generate(latent [n, latent_dim], d int [n])`` returns pixel means.  Returns
    ``[discrete_size * latent_dim, len(values), H, W, C]``, rows d-major.
    """
    values = np.asarray(values, np.float32)
    latent = np.zeros((discrete_size, latent_dim, len(values), latent_dim), np.float32)
    for i in range(latent_dim):
        latent[:, i, :, i] = values
    d = np.repeat(np.arange(discrete_size, dtype=np.int32), latent_dim * len(values))
    images = np.asarray(generate(latent.reshape(-1, latent_dim), d))
    return images.reshape(discrete_size * latent_dim, len(values), *images.shape[1:])


#: Line colours of ``line_chart`` (RGB), one a series, in order.
COLOURS = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14))


def line_chart(path, steps, series, title="", y_range=(0.0, 1.0), size=(640, 400)):
    """Writes a PNG line chart: ``series`` maps a name to values at ``steps`` (x axis).

    Drawn with PIL alone (the package does not depend on matplotlib): axes with five ticks
    each, one coloured line with dots per series, a legend and a title.  Values outside
    ``y_range`` are clipped to it.  Returns ``path``.
    """
    steps = np.asarray(steps, np.float64)
    if steps.ndim != 1 or len(steps) == 0:
        raise ValueError(f"steps: expected a non-empty list of x values, received shape {steps.shape}")
    if len(series) > len(COLOURS):
        raise ValueError(f"series: at most {len(COLOURS)} lines, received {len(series)}")
    for name, values in series.items():
        if len(values) != len(steps):
            raise ValueError(f"series {name!r}: {len(values)} values for {len(steps)} steps")
    width, height = size
    left, right, top, bottom = 60, width - 20, 30, height - 40
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    x_low, x_high = float(steps.min()), float(steps.max()) if steps.max() > steps.min() else float(steps.min()) + 1
    y_low, y_high = y_range

    def point(x, y):
        y = min(max(float(y), y_low), y_high)
        return (left + (x - x_low) / (x_high - x_low) * (right - left),
                bottom - (y - y_low) / (y_high - y_low) * (bottom - top))

    draw.rectangle([left, top, right, bottom], outline="black")
    for tick in np.linspace(0.0, 1.0, 5):
        x_value, y_value = x_low + tick * (x_high - x_low), y_low + tick * (y_high - y_low)
        x, _ = point(x_value, y_low)
        _, y = point(x_low, y_value)
        draw.line([x, bottom, x, bottom + 4], fill="black")
        draw.text((x - 15, bottom + 8), f"{x_value:,.0f}", fill="black")
        draw.line([left - 4, y, left, y], fill="black")
        draw.text((8, y - 6), f"{y_value:.2f}", fill="black")
    draw.text((left, 8), title, fill="black")
    for i, (name, values) in enumerate(series.items()):
        colour = COLOURS[i]
        points = [point(x, y) for x, y in zip(steps, values)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        for x, y in points:
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
        draw.line([right - 150, top + 12 + 16 * i, right - 130, top + 12 + 16 * i], fill=colour, width=2)
        draw.text((right - 125, top + 6 + 16 * i), name, fill="black")
    image.save(path)
    return path


#: Point colours of ``pca_scatter`` (RGB), one a class, in order (the usual ten-colour palette).
CLASS_COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
                 (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))


def principal_components(codes, num_components=2):
    """Projects ``codes`` [n, D] on their first ``num_components`` principal axes: [n, num_components].

    Centred, then numpy's SVD; each axis's sign is fixed so that its largest loading is
    positive (the figure does not flip between runs).  Codes of fewer dimensions are padded
    with zero columns.
    """
    codes = np.asarray(codes, np.float64)
    if codes.ndim != 2 or len(codes) < 2:
        raise ValueError(f"codes: expected [n >= 2, dims], received shape {codes.shape}")
    centred = codes - codes.mean(axis=0)
    _, _, axes = np.linalg.svd(centred, full_matrices=False)
    axes = axes[:num_components]
    axes *= np.sign(axes[np.arange(len(axes)), np.abs(axes).argmax(axis=1)])[:, None]
    projected = centred @ axes.T
    return np.pad(projected, ((0, 0), (0, num_components - projected.shape[1])))


def pca_scatter(path, panels, labels, class_names=None, panel_size=360):
    """Writes a PNG of side-by-side scatter plots of codes on their first two principal axes.

    Args:
      path: the PNG's path.
      panels: dict title -> codes ``[n, D]`` (e.g. ``{"content": ..., "style": ...}``), all
        of the same ``n`` examples.
      labels: int ``[n]`` class of each example, which colours its point (at most 10 classes).
      class_names: optional legend names, one a class.
      panel_size: width and height of a panel in pixels.

    Returns ``path``.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or not len(labels):
        raise ValueError(f"labels: expected a non-empty vector, received shape {labels.shape}")
    classes = np.unique(labels)
    if len(classes) > len(CLASS_COLOURS) or classes.min() < 0 or classes.max() >= len(CLASS_COLOURS):
        raise ValueError(f"labels: expected classes in 0..{len(CLASS_COLOURS) - 1}, received {classes.tolist()}")
    for title, codes in panels.items():
        if len(codes) != len(labels):
            raise ValueError(f"panels[{title!r}]: {len(codes)} codes for {len(labels)} labels")
    legend = 120
    margin, header = 10, 24
    image = Image.new("RGB", (len(panels) * (panel_size + margin) + margin + legend, panel_size + header + margin),
                      "white")
    draw = ImageDraw.Draw(image)
    for i, (title, codes) in enumerate(panels.items()):
        points = principal_components(codes)
        low, high = points.min(axis=0), points.max(axis=0)
        span = np.where(high > low, high - low, 1.0)
        left, top = margin + i * (panel_size + margin), header
        draw.rectangle([left, top, left + panel_size, top + panel_size], outline="black")
        draw.text((left, 6), f"{title}: first two principal components", fill="black")
        pixels = 4 + (points - low) / span * (panel_size - 8)
        for n in np.random.default_rng(0).permutation(len(labels)):  # no class drawn wholly on top
            x, y = left + pixels[n, 0], top + panel_size - pixels[n, 1]
            draw.ellipse([x - 1.5, y - 1.5, x + 1.5, y + 1.5], fill=CLASS_COLOURS[int(labels[n])])
    left = margin + len(panels) * (panel_size + margin)
    for k in classes:
        y = header + 6 + 16 * int(k)
        draw.rectangle([left, y, left + 10, y + 10], fill=CLASS_COLOURS[int(k)])
        draw.text((left + 16, y), class_names[int(k)] if class_names else f"class {int(k)}", fill="black")
    image.save(path)
    return path


def decomposition(path, canvases, count_probabilities, boxes, digits, reconstructions, scale=4, pad=2):
    """Writes a PNG of how a multi-digit model explains canvases (``MultiDigitModel.decompose``).

    One canvas a row, ``K + 2`` panels: the canvas (grey) with the box of every step its
    likeliest count keeps, one colour a step (``CLASS_COLOURS`` in step order); then each
    step's written digit, its ink in the step's colour, or a flat grey panel where the
    likeliest count leaves the step out; then the reconstruction (grey).  Panels are
    enlarged ``scale`` times (nearest neighbour) and the boxes drawn on the enlarged canvas,
    so their lines are a pixel wide whatever the canvas size.

    Args:
      path: the PNG's path.
      canvases: ``[n, H, W, 1]`` (or ``[n, H, W]``) in [0, 1].
      count_probabilities: ``[n, K + 1]``, q(count | x) of the counts 0..K.
      boxes: ``[n, K, 4]`` ``(y_min, x_min, y_max, x_max)`` in [0, 1] canvas units.
      digits: ``[n, K, H, W, 1]`` (or ``[n, K, H, W]``), each step's digit on an empty canvas.
      reconstructions: ``[n, H, W, 1]`` (or ``[n, H, W]``).
      scale: enlargement, a positive integer.  pad: white pixels between panels.

    Returns ``path``; the image is ``pad + (K + 2) (W scale + pad)`` pixels wide and
    ``pad + n (H scale + pad)`` high.
    """
    def grey(images, name, rank):
        images = np.asarray(images, np.float32)
        if images.ndim == rank + 1 and images.shape[-1] == 1:
            images = images[..., 0]
        if images.ndim != rank:
            raise ValueError(f"{name}: expected {rank} dimensions (and an optional channel of 1), received shape "
                             f"{images.shape}")
        return np.clip(images, 0.0, 1.0)

    canvases = grey(canvases, "canvases", 3)
    n, height, width = canvases.shape
    digits = grey(digits, "digits", 4)
    reconstructions = grey(reconstructions, "reconstructions", 3)
    count_probabilities = np.asarray(count_probabilities, np.float64)
    boxes = np.asarray(boxes, np.float64)
    K = digits.shape[1]
    expected = {"count_probabilities": (n, K + 1), "boxes": (n, K, 4), "digits": (n, K, height, width),
                "reconstructions": (n, height, width)}
    for name, array in (("count_probabilities", count_probabilities), ("boxes", boxes), ("digits", digits),
                        ("reconstructions", reconstructions)):
        if array.shape != expected[name]:
            raise ValueError(f"{name}: expected shape {expected[name]} for {n} canvases of {height}x{width} and "
                             f"K = {K} steps, received {array.shape}")
    if K > len(CLASS_COLOURS):
        raise ValueError(f"digits: at most {len(CLASS_COLOURS)} steps have a colour of their own, received K = {K}")
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1:
        raise ValueError(f"scale: expected a positive integer, received {scale!r}")
    present = np.arange(K)[None, :] < np.argmax(count_probabilities, axis=-1)[:, None]  # [n, K]
    side_y, side_x = height * scale, width * scale
    image = np.full((pad + n * (side_y + pad), pad + (K + 2) * (side_x + pad), 3), 255, np.uint8)

    def put(row, column, rgb):  # rgb [H, W, 3] in [0, 1] -> the enlarged panel
        top, left = pad + row * (side_y + pad), pad + column * (side_x + pad)
        enlarged = np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1)
        image[top:top + side_y, left:left + side_x] = np.round(255 * enlarged).astype(np.uint8)

    colours = np.asarray(CLASS_COLOURS, np.float32) / 255
    for i in range(n):
        put(i, 0, np.repeat(canvases[i][..., None], 3, axis=-1))
        for k in range(K):
            # Present: ink in the step's colour on black; absent: a flat grey, so no step reads as empty.
            put(i, 1 + k, digits[i, k][..., None] * colours[k] if present[i, k] else np.full((height, width, 3), 0.5))
        put(i, K + 1, np.repeat(reconstructions[i][..., None], 3, axis=-1))
    picture = Image.fromarray(image)
    draw = ImageDraw.Draw(picture)
    for i in range(n):
        top, left = pad + i * (side_y + pad), pad
        for k in np.flatnonzero(present[i]):
            y_min, x_min, y_max, x_max = np.clip(boxes[i, k], 0.0, 1.0)
            # Pixel edges of the enlarged canvas, kept inside the panel (a box may overhang the canvas).
            corners = [left + min(x_min * side_x, side_x - 1), top + min(y_min * side_y, side_y - 1),
                       left + min(x_max * side_x, side_x - 1), top + min(y_max * side_y, side_y - 1)]
            draw.rectangle([round(c) for c in corners], outline=CLASS_COLOURS[k])
    picture.save(path)
    return path
