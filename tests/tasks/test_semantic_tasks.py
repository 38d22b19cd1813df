"""The semantic tasks against targets worked out by hand on tiny label maps and images (the shared
contract -- shapes, seeding, failure, monotone strength -- is in test_task_contract.py)."""

import numpy as np
import pytest

from medrep.tasks import get_task, task_names
from medrep.tasks.semantic import pick_label

N = 24


def target(name, mask=None, strength=0.0, image=None, seed=0):
    image = np.full((N, N), 0.5, np.float32) if image is None else image
    inp, tgt = get_task(name)(image, mask, np.random.default_rng(seed), strength)
    np.testing.assert_array_equal(inp[0], image)  # every semantic task shows the image itself
    assert tgt.shape == (1,) + image.shape and 0.0 <= tgt.min() and tgt.max() <= 1.0
    return tgt[0]


def rect(r0, r1, c0, c1, label=1, mask=None):
    """A label map with one rectangle (rows r0..r1, columns c0..c1, inclusive)."""
    mask = np.zeros((N, N), np.int64) if mask is None else mask
    mask[r0:r1 + 1, c0:c1 + 1] = label
    return mask


def disk(cy=11, cx=12, radius=7):
    y, x = np.mgrid[:N, :N]
    return ((y - cy) ** 2 + (x - cx) ** 2 <= radius**2).astype(np.int64)


def test_the_family_has_eleven_tasks_three_of_them_without_a_mask_and_says_what_strength_does():
    names = task_names("semantic")
    assert len(names) >= 11
    assert sum(not get_task(n).needs_mask for n in names) >= 3
    assert all("strength" in get_task(n).summary for n in names)


def test_pick_label_draws_only_the_labels_present():
    mask = rect(2, 5, 2, 5, label=5, mask=rect(10, 14, 10, 14, label=2))
    assert {pick_label(mask, np.random.default_rng(s)) for s in range(40)} == {2, 5}


def test_segment_structure_is_the_drawn_label_then_dilated():
    mask = rect(8, 12, 8, 12, label=4)
    np.testing.assert_array_equal(target("segment_structure", mask), mask == 4)
    grown = target("segment_structure", mask, 1.0)  # 3 cross dilations: a diamond of radius 3 around the square
    assert grown[5, 10] == 1 and grown[4, 10] == 0 and grown[7, 6] == 1 and grown[6, 6] == 0


def test_segment_multiclass_ranks_labels_and_grows_them_to_meet_halfway():
    mask = rect(8, 15, 2, 9, label=3, mask=rect(8, 15, 14, 21, label=7))  # a 4-column gap: columns 10..13
    flat = target("segment_multiclass", mask)
    np.testing.assert_allclose(flat, np.where(mask == 3, 0.5, np.where(mask == 7, 1.0, 0.0)))
    grown = target("segment_multiclass", mask, 1.0)  # up to 3 pixels, each gap pixel to its nearer label
    np.testing.assert_allclose(grown[11, 8:16], [0.5, 0.5, 0.5, 0.5, 1.0, 1.0, 1.0, 1.0])
    assert grown[4, 5] == 0.0 and grown[5, 5] == 0.5  # 4 rows above the left square: out of reach; 3: in


def test_contour_is_the_boundary_and_thickens_inward():
    mask = disk()
    fg = mask == 1
    boundary = fg & ~np.all([np.roll(fg, s, a) for s in (1, -1) for a in (0, 1)], axis=0)  # a 4-neighbour is outside
    np.testing.assert_array_equal(target("contour", mask), boundary)
    thick = target("contour", mask, 1.0).astype(bool)
    assert (thick >= boundary).all() and thick.sum() > boundary.sum() and not (thick & ~fg).any()
    assert not thick[11, 12]  # the centre, 7 pixels deep, is not on a 4-pixel band


def test_bounding_box_is_the_box_of_the_structure_plus_its_margin_clipped_to_the_image():
    mask = disk(cy=11, cx=12, radius=5)
    np.testing.assert_array_equal(target("bounding_box", mask), rect(6, 16, 7, 17) > 0)
    np.testing.assert_array_equal(target("bounding_box", rect(5, 12, 8, 20), 1.0), rect(1, 16, 4, 23) > 0)


def test_box_outline_is_the_rim_of_the_tight_box():
    mask = disk(cy=11, cx=12, radius=5)
    box = rect(6, 16, 7, 17) > 0
    np.testing.assert_array_equal(target("box_outline", mask), box & ~(rect(7, 15, 8, 16) > 0))
    np.testing.assert_array_equal(target("box_outline", mask, 1.0), box & ~(rect(9, 13, 10, 14) > 0))  # 3 pixels thick


def test_centroid_heatmap_peaks_at_the_centroid_with_the_set_sigma():
    heat = target("centroid_heatmap", rect(4, 8, 10, 16))  # centroid (6, 13); sigma 1 at strength 0
    assert np.unravel_index(heat.argmax(), heat.shape) == (6, 13) and heat[6, 13] == pytest.approx(1.0)
    assert heat[7, 13] == pytest.approx(np.exp(-0.5), rel=1e-5) and heat[6, 15] == pytest.approx(np.exp(-2.0), rel=1e-5)
    wide = target("centroid_heatmap", rect(4, 8, 10, 16), 1.0)  # sigma 6
    assert wide[6, 19] == pytest.approx(np.exp(-0.5), rel=1e-5)


def test_detect_centroids_puts_a_peak_on_every_structure():
    mask = rect(2, 6, 2, 6, label=1, mask=rect(14, 20, 12, 18, label=9))  # centroids (4, 4) and (17, 15)
    heat = target("detect_centroids", mask)
    assert heat[4, 4] == pytest.approx(1.0) and heat[17, 15] == pytest.approx(1.0)
    assert heat[10, 10] < 1e-6


def test_distance_map_is_one_pixel_on_the_boundary_and_grows_inward():
    mask = rect(4, 12, 4, 12)  # 9 x 9: 5 pixels deep at its centre (8, 8)
    dist = target("distance_map", mask, 1.0) * 16  # saturation distance 16 pixels at strength 1: no clipping
    np.testing.assert_allclose(dist[8, 3:14], [0, 1, 2, 3, 4, 5, 4, 3, 2, 1, 0])
    assert (dist[mask == 0] == 0).all()
    np.testing.assert_allclose(target("distance_map", mask)[8, 4:9], [0.5, 1, 1, 1, 1])  # saturates at 2 pixels


def test_signed_distance_is_one_half_on_the_boundary_and_grows_inside_and_falls_outside():
    mask = rect(4, 12, 4, 12)
    sd = (target("signed_distance", mask, 1.0) - 0.5) * 2 * 16  # back to pixels (D = 16)
    np.testing.assert_allclose(sd[8, 0:9], [-3.5, -2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5, 4.5], atol=1e-5)
    near = target("signed_distance", mask)  # D = 2: far outside 0, deep inside 1
    assert near[8, 3] == pytest.approx(0.375) and near[8, 4] == pytest.approx(0.625)
    assert near[20, 20] == 0.0 and near[8, 8] == 1.0


def test_edges_are_high_on_a_step_and_zero_on_flat_ground():
    image = np.where(np.arange(N) < 12, 0.2, 0.8).astype(np.float32)[None].repeat(N, 0)
    for strength in (0.0, 1.0):
        edge = target("edges", image=image, strength=strength)
        assert edge[:, 11].min() == pytest.approx(1.0) and edge[:, 12].min() == pytest.approx(1.0)
        assert edge[:, :2].max() < 0.05 and edge[:, -2:].max() < 0.05
    assert target("edges", image=image, strength=1.0)[:, 8].mean() > target("edges", image=image)[:, 8].mean()
    assert not target("edges", image=np.full((N, N), 0.3, np.float32)).any()  # a flat image has no edges


def test_foreground_fills_holes_and_takes_in_fainter_tissue_as_strength_rises():
    body = disk(radius=9) == 1
    image = np.where(body, 0.9, 0.02).astype(np.float32)
    image[9:14, 10:15] = 0.02  # a dark hole inside the body: filled
    image[0, :] = 0.3  # a faint strip at the frame: below Otsu's level, above a quarter of it
    np.testing.assert_array_equal(target("foreground", image=image), body)
    np.testing.assert_array_equal(target("foreground", image=image, strength=1.0), body | (np.arange(N) == 0)[:, None])


def test_intensity_classes_cut_at_equal_population_quantiles():
    image = (np.arange(N * N, dtype=np.float32) / (N * N - 1)).reshape(N, N)
    two = target("intensity_classes", image=image)
    np.testing.assert_array_equal(two.ravel(), (np.arange(N * N) >= N * N // 2).astype(np.float32))
    five = target("intensity_classes", image=image, strength=1.0)
    values, counts = np.unique(five, return_counts=True)
    np.testing.assert_allclose(values, [0, 0.25, 0.5, 0.75, 1])
    assert counts.max() - counts.min() <= 1 and (np.diff(five.ravel()) >= 0).all()
