"""Generative tasks: the input is a degraded image, the target the image it came from (denoising,
deblurring, super-resolution, inpainting ...), or the input is the image and the target a new
rendering of it (colourisation). Strength is the degradation's severity: 0 is no degradation (the
input is the clean image), 1 the most severe, and every task is ``monotone``.

Random choices (noise, a motion direction, a box position ...) are drawn in the same order whatever
the strength, and where it is cheap the strength only scales one shared draw (Gaussian, Rician,
impulse, missing pixels, bias field, streaks), so one seed swept over strength is one degradation
growing smoothly. Poisson counts and gamma speckle are drawn afresh at each dose (their inverse CDFs
cost ~4 ms a 64 x 64 image): their distance from the clean image still grows with strength, on average
over the pixels.

Every failure variant is the default one (the clean target of a mismatched image): all targets here
depend on the image, so that pair is never consistent with its input."""

from __future__ import annotations

import numpy as np

from .base import Pair, register_task

# ---------------------------------------------------------------- noise


@register_task("denoise_gaussian", "generative", "remove additive Gaussian noise, sigma 0-0.3 of the intensity range")
def denoise_gaussian(image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator, strength: float) -> Pair:
    noise = rng.standard_normal(image.shape).astype(np.float32)
    return np.clip(image + 0.3 * strength * noise, 0, 1), image


#: photons a pixel of intensity 1 counts at strength 1 (strength s: PEAK_PHOTONS / s^2)
PEAK_PHOTONS = 20.0


@register_task("denoise_poisson", "generative", "remove photon-count (Poisson) noise of a lower dose: a pixel of intensity 1 "
               "counts 20/strength^2 photons (strength 1: 20, 0.5: 80, 0.25: 320; relative noise 1/sqrt(counts)); "
               "strength 0 is noiseless")
def denoise_poisson(image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator, strength: float) -> Pair:
    if strength == 0:
        return image, image
    photons = PEAK_PHOTONS / strength**2
    return np.clip(rng.poisson(image * photons) / photons, 0, 1), image


@register_task("denoise_speckle", "generative", "remove multiplicative speckle (ultrasound-like): each pixel times a unit-mean "
               "gamma variate of std 0-0.5 (speckle contrast std/mean; 0.5 ~ fully developed speckle of a B-mode envelope)")
def denoise_speckle(image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator, strength: float) -> Pair:
    if strength == 0:
        return image, image
    looks = 1.0 / (0.5 * strength) ** 2  # gamma(shape L, scale 1/L): mean 1, std 1/sqrt(L)
    return np.clip(image * rng.gamma(looks, 1.0 / looks, image.shape), 0, 1), image


@register_task("denoise_impulse", "generative", "remove salt-and-pepper noise: a fraction 0-0.3 of the pixels set to 0 or 1 "
               "(dead or saturated detector pixels, bit errors)")
def denoise_impulse(image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator, strength: float) -> Pair:
    hit, salt = rng.random((2, *image.shape))
    # one uniform per pixel: the pixels hit at a lower strength stay hit at a higher one
    return np.where(hit < 0.3 * strength, (salt < 0.5).astype(np.float32), image), image


@register_task("denoise_rician", "generative", "remove MR magnitude (Rician) noise: |image + complex Gaussian noise|, sigma 0-0.2 "
               "of the intensity range per channel; lifts the dark background to a Rayleigh floor of mean 1.25 sigma")
def denoise_rician(image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator, strength: float) -> Pair:
    real, imag = 0.2 * strength * rng.standard_normal((2, *image.shape))
    return np.clip(np.hypot(image + real, imag), 0, 1), image


# ---------------------------------------------------------------- blur and resolution


@register_task("deblur_gaussian", "generative", "remove a Gaussian blur (a wide point-spread function) of sigma 0-3 pixels")
def deblur_gaussian(image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator, strength: float) -> Pair:
    from scipy import ndimage

    return ndimage.gaussian_filter(image, 3.0 * strength, mode="reflect"), image


def line_kernel(length: float, angle: float) -> np.ndarray:
    """A normalised point-spread function of a straight motion of ``length`` pixels at ``angle``
    (radians): dense points along the segment splatted bilinearly, so the length need not be whole."""
    radius = int(np.ceil(length / 2)) + 1
    t = np.linspace(-length / 2, length / 2, 4 * int(np.ceil(length)) + 1)
    y, x = radius + t * np.sin(angle), radius + t * np.cos(angle)
    y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
    fy, fx = y - y0, x - x0
    kernel = np.zeros((2 * radius + 1, 2 * radius + 1))  # the points lie in [1, 2 radius - 1], so their +1 corners fit
    for dy, dx, w in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        np.add.at(kernel, (y0 + dy, x0 + dx), w)
    return kernel / kernel.sum()


@register_task("deblur_motion", "generative", "remove a linear motion blur: the image averaged along a straight path of 0-12 "
               "pixels in a direction drawn uniformly (patient or probe motion during the exposure)")
def deblur_motion(image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator, strength: float) -> Pair:
    from scipy import ndimage

    angle = rng.uniform(0, np.pi)
    if strength == 0:
        return image, image
    return ndimage.convolve(image, line_kernel(12.0 * strength, angle).astype(np.float32), mode="reflect"), image


def bin_and_replicate(image: np.ndarray, factor: int, offset: tuple[int, int]) -> np.ndarray:
    """Mean over ``factor`` x ``factor`` blocks (a coarser detector, whose grid starts ``offset``
    pixels in), each block's mean repeated back over its pixels: the same size, ``factor`` times
    coarser. Edge pixels fill the partial blocks at the borders."""
    h, w = image.shape
    before = [(factor - o) % factor for o in offset]
    after = [(-(n + b)) % factor for n, b in zip((h, w), before)]
    padded = np.pad(image, list(zip(before, after)), mode="edge")
    ph, pw = padded.shape
    blocks = padded.reshape(ph // factor, factor, pw // factor, factor).mean(axis=(1, 3))
    coarse = np.repeat(np.repeat(blocks, factor, axis=0), factor, axis=1)
    return coarse[before[0]: before[0] + h, before[1]: before[1] + w]


@register_task("super_resolution", "generative", "recover the full resolution from pixels binned by an integer factor "
               "1 + round(3 strength) (1-4; block means shown at the original size, the block grid's phase drawn)")
def super_resolution(image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator, strength: float) -> Pair:
    phase = rng.random(2)
    factor = int(np.floor(1 + 3 * strength + 0.5))
    offset = tuple(int(p * factor) for p in phase)
    return bin_and_replicate(image, factor, offset), image


# ---------------------------------------------------------------- missing data


def box_slices(shape: tuple[int, int], centre: np.ndarray, aspect: float, strength: float) -> tuple[slice, slice]:
    """The rows and columns of a box about ``centre`` (fractions of the image) whose sides are up to
    half the image's at strength 1. A fixed centre makes the boxes of one seed nested as strength grows."""
    out = []
    for n, c, a in zip(shape, centre, (np.sqrt(aspect), 1 / np.sqrt(aspect))):
        half = 0.25 * strength * n * a
        lo, hi = int(np.floor(c * n - half + 0.5)), int(np.floor(c * n + half + 0.5))
        out.append(slice(max(lo, 0), min(hi, n)))
    return out[0], out[1]


@register_task("inpaint_box", "generative", "fill in a missing box (zeroed): sides 0-1/2 of the image (area 0-25%) at a drawn "
               "position in the central half, aspect drawn in 2/3-3/2 (a lost detector region, a redacted label)")
def inpaint_box(image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator, strength: float) -> Pair:
    centre, aspect = rng.uniform(0.25, 0.75, 2), rng.uniform(2 / 3, 3 / 2)
    inp = image.copy()
    inp[box_slices(image.shape, centre, aspect, strength)] = 0
    return inp, image


@register_task("inpaint_pixels", "generative", "fill in missing pixels (zeroed) scattered at random, a fraction 0-0.7 of the "
               "image (undersampled acquisition, dropped detector elements)")
def inpaint_pixels(image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator, strength: float) -> Pair:
    return np.where(rng.random(image.shape) < 0.7 * strength, np.float32(0), image), image


# ---------------------------------------------------------------- renderings and intensity corruptions


def hot_iron(x: np.ndarray) -> np.ndarray:
    """The hot-iron colour map of nuclear medicine (black, red, yellow, white): (3, H, W). Its
    luminance rises monotonically from 0 to 1, so the colour image keeps the gray image's order."""
    return np.clip(3 * x[None] - np.arange(3, dtype=np.float32)[:, None, None], 0, 1)


@register_task("colourise", "generative", "render the gray image in pseudo-colour through the hot-iron map (PET/SPECT display): "
               "the RGB target blends the gray image (strength 0) into the full colour map (strength 1)")
def colourise(image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator, strength: float) -> Pair:
    gray = np.broadcast_to(image, (3, *image.shape))
    return image, (1 - strength) * gray + strength * hot_iron(image)


def smooth_field(shape: tuple[int, int], rng: np.random.Generator, degree: int = 3) -> np.ndarray:
    """A random polynomial of ``degree`` in normalised coordinates, scaled to [-1, 1] at its extreme:
    the slowly varying shape of a coil's sensitivity."""
    y, x = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    powers = [(i, j) for i in range(degree + 1) for j in range(degree + 1 - i) if i + j]
    coef = rng.standard_normal(len(powers))
    field = sum(c * y**i * x**j for c, (i, j) in zip(coef, powers))
    return field / max(np.abs(field).max(), 1e-6)


@register_task("bias_field", "generative", "correct a smooth multiplicative MR bias field (coil sensitivity): the image times "
               "2^(strength f), f a drawn cubic polynomial in [-1, 1], so up to 2x brighter or darker at strength 1")
def bias_field(image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator, strength: float) -> Pair:
    field = np.exp2(strength * smooth_field(image.shape, rng)).astype(np.float32)
    return np.clip(image * field, 0, 1), image


@register_task("dequantise", "generative", "restore the intensities of an image quantised to 8 - 7 strength bits (256 levels "
               "near 0 down to 2 at 1: banding, a coarse ADC or an 8-bit export); strength 0 keeps the float image")
def dequantise(image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator, strength: float) -> Pair:
    if strength == 0:
        return image, image
    steps = np.float32(np.round(2.0 ** (8 - 7 * strength)) - 1)  # levels - 1
    return np.round(image * steps) / steps, image


#: straight streaks a metal-artefact sample draws, and their width (Gaussian sigma, pixels)
STREAKS, STREAK_WIDTH = 6, 0.8


@register_task("deartifact_streaks", "generative", "remove CT-like streak artefacts: 6 thin straight streaks (bright or dark, "
               "amplitudes drawn) radiating through one drawn point (a metal implant), peak amplitude 0-0.3 of the intensity range")
def deartifact_streaks(image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator, strength: float) -> Pair:
    h, w = image.shape
    centre = rng.uniform(0.3, 0.7, 2) * (h, w)
    angle = rng.uniform(0, np.pi, STREAKS)[:, None, None]
    amp = rng.choice([-1.0, 1.0], STREAKS) * rng.uniform(0.5, 1.0, STREAKS)
    y, x = np.mgrid[0:h, 0:w]
    dist = (x - centre[1]) * np.sin(angle) - (y - centre[0]) * np.cos(angle)  # signed distance to each line
    streaks = np.tensordot(amp, np.exp(-0.5 * (dist / STREAK_WIDTH) ** 2), axes=1)
    return np.clip(image + 0.3 * strength * streaks.astype(np.float32), 0, 1), image
