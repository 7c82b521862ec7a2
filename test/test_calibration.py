"""IR -> RGB calibration: point pairs, camera_info, edge-based refinement of a synthetic pair
within 1 px, the start kept when no estimate beats it (a real RoadScene pair) and a shift
found (the same pair shifted), the node parameters snippet and the `calibrate` command with
--points, --camera-info, --images and --folder."""
import argparse

import cv2
import numpy as np
import pytest
import yaml

from ivtuning_ros.commands.calibrate import add_calibrate_parser
from ivtuning_ros.ros.params import SPECS, check_value
from ivtuning_ros.runtime.calibration import (
    SCORE_MARGIN,
    CalibrationError,
    align_images,
    homography_from_camera_info,
    homography_from_params,
    homography_from_points,
    load_image_pair,
    load_point_pairs,
    params_snippet,
    refine_homography,
    reprojection_error,
)
from ivtuning_ros.runtime.registration import (
    homography_from_calibration,
    rotation_from_rpy,
    scaling_homography,
)

from .conftest import ROADSCENE

H_TRUE = np.array([[1.6, 0.02, 100.0], [-0.015, 1.2, 50.0], [1e-5, -1e-5, 1.0]])
RGB_SIZE, IR_SIZE = (720, 1280), (512, 640)
ALIGNED_PAIR = "FLIR_00060"  # registered by RoadScene's authors; estimates gain ~0.006


def shift(dx, dy):
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])


def transform(homography, points):
    return cv2.perspectiveTransform(np.asarray(points, np.float64)[:, None], homography)[:, 0]


def ir_grid(step=32):
    ys, xs = np.mgrid[0:IR_SIZE[0]:step, 0:IR_SIZE[1]:step]
    return np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)


def grid_error(homography):
    """RMS RGB-pixel distance from the true mapping over a grid covering the IR frame."""
    points = ir_grid()
    return reprojection_error(homography, points, transform(H_TRUE, points))


def scene(seed):
    """An RGB scene with strong structure: filled rectangles and circles, lightly smoothed."""
    rng = np.random.default_rng(seed)
    image = np.full((*RGB_SIZE, 3), 90, np.uint8)
    for _ in range(60):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        x, y = int(rng.integers(0, RGB_SIZE[1])), int(rng.integers(0, RGB_SIZE[0]))
        if rng.random() < 0.5:
            size = rng.integers(30, 180, 2)
            cv2.rectangle(image, (x, y), (x + int(size[0]), y + int(size[1])), colour, -1)
        else:
            cv2.circle(image, (x, y), int(rng.integers(15, 90)), colour, -1)
    return cv2.GaussianBlur(image, (0, 0), 1.0)


def thermal_view(rgb, homography, seed):
    """The scene as a thermal camera in IR geometry sees it: other intensities (inverted,
    blurred, raw 16-bit counts with noise), same boundaries."""
    temperature = 255.0 - cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    temperature = cv2.GaussianBlur(temperature, (0, 0), 2.0)
    # WARP_INVERSE_MAP: each IR pixel samples the scene at H @ x_ir (IR -> RGB).
    warped = cv2.warpPerspective(temperature, homography, IR_SIZE[::-1],
                                 flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    noise = np.random.default_rng(seed).normal(0.0, 30.0, warped.shape)
    return (20000 + 40 * warped + noise).astype(np.uint16)


def test_exact_point_pairs_recover_the_homography():
    ir = np.array([[10, 20], [600, 15], [620, 500], [30, 480], [320, 256], [100, 300]], float)
    # OpenCV solves in float32: exact pairs come back to ~1e-5 px.
    homography, rms = homography_from_points(ir, transform(H_TRUE, ir))
    assert rms < 1e-3 and grid_error(homography) < 1e-3
    assert homography[2, 2] == 1.0
    four, rms4 = homography_from_points(ir[:4], transform(H_TRUE, ir[:4]))
    assert rms4 < 1e-3 and grid_error(four) < 1e-3


def test_noisy_point_pairs_within_a_pixel_and_ransac_drops_outliers():
    rng = np.random.default_rng(0)
    ir = ir_grid(96) + rng.uniform(-10, 10, (len(ir_grid(96)), 2))
    rgb = transform(H_TRUE, ir) + rng.normal(0.0, 0.5, (len(ir), 2))
    homography, rms = homography_from_points(ir, rgb)
    assert rms < 1.0 and grid_error(homography) < 1.0
    rgb[:3] += 40.0  # three wrong clicks
    plain, _ = homography_from_points(ir, rgb)
    robust, _ = homography_from_points(ir, rgb, ransac=True)
    assert grid_error(plain) > 1.0 > grid_error(robust)


def test_too_few_and_collinear_points_are_refused():
    ir = np.array([[0, 0], [100, 0], [0, 100]], float)
    with pytest.raises(ValueError, match="at least 4 point pairs, got 3"):
        homography_from_points(ir, transform(H_TRUE, ir))
    line = np.array([[0, 0], [10, 10], [20, 20], [35, 35], [50, 50]], float)
    with pytest.raises(ValueError, match="IR points are collinear"):
        homography_from_points(line, transform(H_TRUE, line))
    three_on_a_line = np.array([[0, 0], [100, 0], [200, 0], [50, 100]], float)
    with pytest.raises(ValueError, match="do not fix a homography"):
        homography_from_points(three_on_a_line, transform(H_TRUE, three_on_a_line))
    with pytest.raises(ValueError, match="4 IR points but 5 RGB points"):
        homography_from_points(line[:4], line)


def test_camera_info_mode_equals_the_runtime_formula():
    k_ir = np.array([[500.0, 0, 320], [0, 500, 256], [0, 0, 1]])
    k_rgb = np.array([[900.0, 0, 640], [0, 900, 360], [0, 0, 1]])
    translation, rpy = [0.05, -0.01, 0.002], [0.01, -0.02, 0.005]
    expected = homography_from_calibration(k_ir, k_rgb, rotation_from_rpy(*rpy),
                                           np.array(translation), 7.5)
    np.testing.assert_allclose(homography_from_camera_info(k_ir, k_rgb, translation, rpy, 7.5),
                               expected, rtol=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_refinement_recovers_a_known_homography_within_a_pixel(seed):
    rgb = scene(seed)
    ir = thermal_view(rgb, H_TRUE, seed)
    # A few pixels of shift and a percent or two of scale off the truth.
    initial = np.array([[1.015, 0.0, 6.0], [0.0, 0.99, -5.0], [0.0, 0.0, 1.0]]) @ H_TRUE
    assert grid_error(initial) > 10.0
    refined, score = refine_homography(rgb, ir, initial)
    assert grid_error(refined) < 1.0
    assert 0.5 < score <= 1.0


def test_alignment_keeps_a_start_that_no_estimate_beats():
    rgb = scene(0)
    alignment = align_images(rgb, thermal_view(rgb, H_TRUE, 0), H_TRUE)
    assert alignment.choice == "start"
    np.testing.assert_array_equal(alignment.homography, H_TRUE)
    assert max(alignment.scores.values()) < alignment.scores["start"] + SCORE_MARGIN


@pytest.fixture
def roadscene_pair():
    """(RGB path, IR path) of a real registered pair of the shared RoadScene copy."""
    paths = (ROADSCENE / "crop_LR_visible" / f"{ALIGNED_PAIR}.jpg",
             ROADSCENE / "cropinfrared" / f"{ALIGNED_PAIR}.jpg")
    if not all(path.is_file() for path in paths):
        pytest.skip(f"real pair {ALIGNED_PAIR} not in {ROADSCENE} (the shared RoadScene copy "
                    "is absent)")
    return paths


def test_aligned_real_pair_keeps_the_scale_registration(roadscene_pair, tmp_path, capsys):
    out = tmp_path / "calibration.yaml"
    assert calibrate(["--images", *map(str, roadscene_pair), "--out", str(out)]) == 0
    assert "kept the starting registration: alignment score" in capsys.readouterr().out
    rgb, ir = load_image_pair(*roadscene_pair)
    np.testing.assert_array_equal(homography_from_params(out),
                                  scaling_homography(*ir.shape, *rgb.shape[:2]))


def test_real_pair_shifted_a_few_pixels_is_corrected(roadscene_pair):
    rgb, ir = load_image_pair(*roadscene_pair)
    (dx, dy), border = (4, -3), 8
    height, width = ir.shape
    # Cropped, not warped: a warped IR would have a blank border whose edge RGB lacks.
    rgb = rgb[border:height - border, border:width - border]
    ir = ir[border + dy:height - border + dy, border + dx:width - border + dx]
    # Now IR pixel x shows what RGB pixel x + (dx, dy) does.
    alignment = align_images(rgb, ir, scaling_homography(*ir.shape, *rgb.shape[:2]))
    assert alignment.choice != "start"
    assert alignment.scores[alignment.choice] > alignment.scores["start"] + SCORE_MARGIN
    grid = np.stack(np.mgrid[0:width - 2 * border:16, 0:height - 2 * border:16], -1)
    grid = grid.reshape(-1, 2).astype(np.float64)
    # The mean displacement: the pair's own registration is up to 2 px off a pure identity
    # at the corners (a slight scale), while the shift is a translation.
    moved = transform(alignment.homography, grid) - grid
    np.testing.assert_allclose(moved.mean(axis=0), [dx, dy], atol=0.5)


def test_no_common_structure_is_a_clear_error_or_keeps_the_start():
    rgb = scene(0)
    flat = np.full(IR_SIZE, 30000, np.uint16)
    with pytest.raises(CalibrationError, match="did not converge"):
        refine_homography(rgb, flat, H_TRUE)
    alignment = align_images(rgb, flat, H_TRUE)
    assert alignment.choice == "start" and list(alignment.scores) == ["start"]
    assert "did not converge" in alignment.failure


def test_params_snippet_round_trips_with_the_node_parameter_names(tmp_path):
    text = params_snippet(H_TRUE * 2.0)
    parameters = yaml.safe_load(text)["ivtuning_perception"]["ros__parameters"]
    assert set(parameters) <= set(SPECS)
    for name, value in parameters.items():
        assert check_value(name, value) is None, name
    assert parameters["registration"] == "homography"
    assert all(isinstance(v, float) for v in parameters["homography"])
    assert parameters["homography"] == [float(v) for v in H_TRUE.reshape(-1)]
    path = tmp_path / "calibration.yaml"
    path.write_text(text)
    np.testing.assert_array_equal(homography_from_params(path), H_TRUE)
    assert "my_node:" in params_snippet(H_TRUE, node_name="my_node")


def test_point_files_in_csv_and_yaml(tmp_path):
    ir = np.array([[10, 20], [600, 15], [620, 500], [30, 480]], float)
    rgb = transform(H_TRUE, ir)
    csv_file = tmp_path / "points.csv"
    csv_file.write_text("ir_x,ir_y,rgb_x,rgb_y\n" + "".join(
        f"{a},{b},{c},{d}\n" for (a, b), (c, d) in zip(ir, rgb, strict=True)))
    yaml_file = tmp_path / "points.yaml"
    yaml_file.write_text(yaml.safe_dump({"pairs": [
        dict(zip(("ir_x", "ir_y", "rgb_x", "rgb_y"), map(float, [*i, *r]), strict=True))
        for i, r in zip(ir, rgb, strict=True)]}))
    for path in (csv_file, yaml_file):
        loaded_ir, loaded_rgb = load_point_pairs(path)
        np.testing.assert_allclose(loaded_ir, ir)
        np.testing.assert_allclose(loaded_rgb, rgb)
    bad = tmp_path / "bad.yaml"
    bad.write_text("- {ir_x: 1, ir_y: 2, rgb_x: 3}\n")
    with pytest.raises(ValueError, match="lacks 'rgb_y'"):
        load_point_pairs(bad)
    with pytest.raises(FileNotFoundError):
        load_point_pairs(tmp_path / "missing.csv")


def calibrate(argv):
    parser = argparse.ArgumentParser()
    add_calibrate_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["calibrate", *argv])
    return args.run(args)


def test_command_in_points_mode_writes_the_snippet(tmp_path, capsys):
    ir = ir_grid(128)
    rgb = transform(H_TRUE, ir)
    points = tmp_path / "points.csv"
    points.write_text("".join(f"{a},{b},{c},{d}\n" for (a, b), (c, d) in zip(ir, rgb,
                                                                             strict=True)))
    out = tmp_path / "out" / "calibration.yaml"
    assert calibrate(["--points", str(points), "--out", str(out)]) == 0
    assert grid_error(homography_from_params(out)) < 1e-3
    report = capsys.readouterr().out
    assert "IR -> RGB homography" in report and f"point pairs: {len(ir)}" in report
    assert "reprojection RMS 0.000 px" in report and str(out) in report


def test_command_camera_info_and_images_modes(tmp_path, capsys):
    infos = []
    for name, k in (("rgb", [900.0, 0, 640, 0, 900, 360, 0, 0, 1]),
                    ("ir", [450.0, 0, 320, 0, 450, 256, 0, 0, 1])):
        infos.append(tmp_path / f"{name}.yaml")
        infos[-1].write_text(yaml.safe_dump({"image_width": 640, "image_height": 512,
                                             "camera_matrix": {"rows": 3, "cols": 3,
                                                               "data": k}}))
    out = tmp_path / "info.yaml"
    assert calibrate(["--camera-info", *map(str, infos), "--distance", "5",
                      "--out", str(out)]) == 0
    np.testing.assert_allclose(homography_from_params(out)[:2, :2], [[2.0, 0.0], [0.0, 2.0]])
    # Images mode from the default start: cameras sharing a field of view, a few px apart.
    truth = np.array([[1.0, 0.0, 4.0], [0.0, 1.0, -3.0], [0, 0, 1]]) @ scaling_homography(
        *IR_SIZE, *RGB_SIZE)
    rgb = scene(2)
    cv2.imwrite(str(tmp_path / "rgb.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(tmp_path / "ir.png"), thermal_view(rgb, truth, 2))
    out = tmp_path / "images.yaml"
    assert calibrate(["--images", str(tmp_path / "rgb.png"), str(tmp_path / "ir.png"),
                      "--out", str(out)]) == 0
    points = ir_grid()
    assert reprojection_error(homography_from_params(out), points,
                              transform(truth, points)) < 1.0
    assert "used the affine estimate: alignment score" in capsys.readouterr().out
    with pytest.raises(ValueError, match="go with --camera-info"):
        calibrate(["--images", "a.png", "b.png", "--distance", "3"])
    with pytest.raises(ValueError, match="needs --points, --camera-info, --images or --folder"):
        calibrate([])


def test_command_folder_mode_aligns_the_first_or_the_named_pair(tmp_path, capsys):
    root = tmp_path / "pairs"
    (root / "rgb").mkdir(parents=True)
    (root / "ir").mkdir()
    truths = {"a": shift(4, -3), "b": shift(-5, 2)}
    for seed, (name, truth) in enumerate(truths.items()):
        truths[name] = truth @ scaling_homography(*IR_SIZE, *RGB_SIZE)
        rgb = scene(seed)
        cv2.imwrite(str(root / "rgb" / f"{name}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(root / "ir" / f"{name}.png"), thermal_view(rgb, truths[name], seed))
    points = ir_grid()
    for name, argv in (("a", []), ("b", ["--pair", "b"])):  # the first pair by default
        out = tmp_path / f"{name}.yaml"
        assert calibrate(["--folder", str(root), *argv, "--out", str(out)]) == 0
        assert reprojection_error(homography_from_params(out), points,
                                  transform(truths[name], points)) < 1.0
        assert f"edge alignment of {name} ({root})" in capsys.readouterr().out
    with pytest.raises(CalibrationError, match=r"no pair 'c' in .* \(2 pairs, from a to b\)"):
        calibrate(["--folder", str(root), "--pair", "c"])
    with pytest.raises(CalibrationError, match="--pair goes with --folder"):
        calibrate(["--images", "rgb.png", "ir.png", "--pair", "a"])
    with pytest.raises(CalibrationError, match="--margin must be 0 or more"):
        calibrate(["--folder", str(root), "--margin", "-0.1"])
