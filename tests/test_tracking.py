"""Tracking without a model: assignment, Kalman filter, ByteTrack/BoT-SORT on a synthetic clip with
ground truth (crossings, occlusions, noise, dropouts), time steps of live sources, line and zone
analytics, settings files, and track ids through Results."""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest

import _tracking_clip as clip
from edgeseg import InputError, Masks, Results
from edgeseg.eval.mot import mot_metrics
from edgeseg.live.tracking import (Analytics, CountLine, TrackerConfig, TrackingStage, Zone, load_config,
                                   make_tracker, parse_line, parse_zone)
from edgeseg.live.tracking.assignment import hungarian, iou_matrix, linear_assignment
from edgeseg.live.tracking.kalman import KalmanBoxFilter, xyxy_to_state

NAMES = {0: "person", 5: "bus"}
GT = clip.ground_truth()


def _run(tracker, dets, times=None) -> List[np.ndarray]:
    return [tracker.update(d["boxes"], d["scores"], d["classes"], time=None if times is None else times[f])
            for f, d in enumerate(dets)]


def _metrics(ids: List[np.ndarray], dets, frames=None) -> Dict:
    frames = range(len(ids)) if frames is None else frames
    return mot_metrics((GT[f]["ids"], GT[f]["boxes"], i, d["boxes"]) for f, i, d in zip(frames, ids, dets))


# -- assignment -----------------------------------------------------------------------------------

def _brute(c: np.ndarray) -> float:
    n = len(c)
    return min(sum(c[i, p[i]] for i in range(n)) for p in itertools.permutations(range(n)))


@pytest.mark.parametrize("n", [1, 2, 3, 5, 6])
def test_hungarian_is_optimal(n: int) -> None:
    rng = np.random.default_rng(n)
    for _ in range(10):
        c = rng.random((n, n))
        col = hungarian(c)
        assert sorted(col.tolist()) == list(range(n))
        assert c[np.arange(n), col].sum() == pytest.approx(_brute(c))


def test_linear_assignment_matches_lapjv_extension() -> None:
    # lap.lapjv(extend_cost=True, cost_limit=t): unmatched row + column cost t; pairs above t never match
    rng = np.random.default_rng(0)
    t = 0.5
    for _ in range(200):
        n, m = rng.integers(0, 4, 2)
        c = rng.random((n, m))
        mt, ur, uc = linear_assignment(c, t)
        big = np.full((n + m, n + m), t / 2)
        big[:n, :m] = np.where(c <= t, c, t + 1)
        big[n:, m:] = 0
        best = _brute(big) if n + m else 0.0
        got = sum(c[i, j] for i, j in mt) + t / 2 * (n + m - 2 * len(mt))
        assert got == pytest.approx(best)
        assert all(c[i, j] <= t for i, j in mt)
        assert sorted(ur.tolist() + mt[:, 0].tolist()) == list(range(n))
        assert sorted(uc.tolist() + mt[:, 1].tolist()) == list(range(m))


@pytest.mark.parametrize("cost, thresh, expected", [
    ([[0.1, 0.2], [0.2, 0.9]], 0.8, [(0, 1), (1, 0)]),   # optimal total (0.4), not greedy (0.1 first)
    ([[0.1, np.inf], [np.inf, 0.95]], 0.8, [(0, 0)]),     # infinite = forbidden, above thresh = unmatched
    ([[0.5, 0.5, 0.5]], 0.8, [(0, 0)]),
])
def test_linear_assignment_cases(cost, thresh, expected) -> None:
    mt, _, _ = linear_assignment(np.array(cost), thresh)
    assert [tuple(x) for x in mt.tolist()] == expected


def test_iou_matrix() -> None:
    a = np.array([[0, 0, 10, 10], [0, 0, 0, 0]], float)
    b = np.array([[5, 0, 15, 10], [0, 0, 10, 10], [20, 20, 30, 30]], float)
    np.testing.assert_allclose(iou_matrix(a, b), [[50 / 150, 1.0, 0.0], [0, 0, 0]])


# -- Kalman filter --------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["xyah", "xywh"])
def test_kalman_steps_by_elapsed_frames(mode: str) -> None:
    kf = KalmanBoxFilter(mode)
    mean, cov = kf.initiate(xyxy_to_state(np.array([[100, 100, 140, 200]]), mode))
    for k in range(1, 6):  # learn a velocity of +4 px/frame in x
        mean, cov = kf.predict(mean, cov, 1.0)
        mean, cov = kf.update(mean, cov, xyxy_to_state(np.array([[100 + 4 * k, 100, 140 + 4 * k, 200]]), mode))
    m3, c3 = kf.predict(mean, cov, 3.0)
    m1, c1 = mean, cov
    for _ in range(3):
        m1, c1 = kf.predict(m1, c1, 1.0)
    np.testing.assert_allclose(m3, m1, rtol=1e-9)
    assert m3[0, 0] - mean[0, 0] == pytest.approx(3 * mean[0, 4])
    assert mean[0, 4] == pytest.approx(4.0, abs=0.8)
    assert c3[0, 0, 0] > cov[0, 0, 0]  # uncertainty grows with the gap


# -- trackers on the synthetic clip -------------------------------------------------------------------

@pytest.mark.parametrize("name", ["bytetrack", "botsort"])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_identities_survive_crossings_and_occlusions(name: str, seed: int) -> None:
    dets = clip.noisy_detections(GT, seed=seed)
    m = _metrics(_run(make_tracker(name), dets), dets)
    assert m["idf1"] >= 0.85, m
    assert m["id_switches"] <= 2, m
    assert m["mota"] >= 0.8, m
    assert m["pred_tracks"] <= 5, m  # ids count objects: at most one spurious


def test_tracking_is_deterministic_and_ids_count_confirmed_tracks() -> None:
    dets = clip.noisy_detections(GT, seed=5)
    a, b = _run(make_tracker("bytetrack"), dets), _run(make_tracker("bytetrack"), dets)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    used = sorted({int(i) for ids in a for i in ids if i >= 0})
    assert used == list(range(1, len(used) + 1))  # 1, 2, 3... no gaps for unconfirmed tracks
    # false boxes (truth -1, a single frame each) never get an id
    assert all(i < 0 for ids, d in zip(a, dets) for i, g in zip(ids, d["gt"]) if g < 0)


def test_live_source_with_skipped_frames_tracks_by_time() -> None:
    # a live source that keeps 1 frame in 3 in the middle of the clip (inference slower than the camera)
    kept = [f for f in range(clip.N_FRAMES) if f < 30 or f > 70 or f % 3 == 0]
    dets_all = clip.noisy_detections(GT, seed=2, dropout=0.0)
    dets = [dets_all[f] for f in kept]
    stage = TrackingStage("bytetrack", fps=clip.FPS, live=True)
    ids = []
    t0 = 1000.0  # monotonic capture timestamps
    for k, (f, d) in enumerate(zip(kept, dets)):
        res, _ = stage(Results(d["boxes"], d["scores"], d["classes"], NAMES, (clip.H, clip.W)), k, t0 + f / clip.FPS)
        ids.append(res.track_ids)
    by_time = _metrics(ids, dets, kept)
    by_count = _metrics(_run(make_tracker("bytetrack"), dets), dets, kept)  # what counting frames would do
    assert by_time["idf1"] >= 0.85 and by_time["id_switches"] <= 2, by_time
    assert by_time["idf1"] >= by_count["idf1"]
    assert stage.clock(5, t0 + 0.5) == (pytest.approx(15.0), pytest.approx(0.5))


def test_class_aware_tracks_never_change_class() -> None:
    rng = np.random.default_rng(0)
    tr = make_tracker(TrackerConfig(class_aware=True))
    box = np.array([[100, 100, 150, 200]], float)
    first = tr.update(box, [0.9], [0], time=0)
    second = tr.update(box + rng.normal(0, 1, 4), [0.9], [5], time=1)  # same place, other class
    agnostic = make_tracker("bytetrack")
    a1 = agnostic.update(box, [0.9], [0], time=0)
    a2 = agnostic.update(box, [0.9], [5], time=1)
    assert first[0] == 1 and second[0] != first[0]
    assert a1[0] == a2[0] == 1


def test_one_object_reported_as_two_classes_gets_one_track() -> None:
    tr = make_tracker("bytetrack")
    out = []
    for f in range(5):
        b = np.array([[100 + 3 * f, 100, 150 + 3 * f, 200], [101 + 3 * f, 100, 150 + 3 * f, 201]], float)
        out.append(tr.update(b, [0.8, 0.5], [0, 10], time=f))
    assert all(o[0] == 1 and o[1] == -1 for o in out), out
    assert tr.next_id == 2


def test_tracker_input_errors() -> None:
    tr = make_tracker("bytetrack")
    with pytest.raises(InputError, match="one score and class per box"):
        tr.update(np.zeros((2, 4)), [0.9], [0, 0])
    tr.update(np.zeros((0, 4)), [], [], time=5)
    with pytest.raises(InputError, match="went backwards"):
        tr.update(np.zeros((0, 4)), [], [], time=4)


# -- camera motion -------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["sparseOptFlow", "ecc"])
def test_camera_motion_recovers_a_pan(method: str) -> None:
    cv2 = pytest.importorskip("cv2")
    from edgeseg.live.tracking.botsort import CameraMotion

    rng = np.random.default_rng(0)
    scene = cv2.GaussianBlur(rng.integers(0, 255, (400, 700, 3), dtype=np.uint8), (0, 0), 2)
    a, b = scene[20:380, 20:660], scene[26:386, 12:652]  # the camera moved: content shifts by (+8, -6)
    gmc = CameraMotion(method, downscale=2)
    np.testing.assert_allclose(gmc(a), np.eye(2, 3))
    A = gmc(b)
    np.testing.assert_allclose(A[:, :2], np.eye(2), atol=0.02)
    np.testing.assert_allclose(A[:, 2], [8, -6], atol=1.0)


def test_botsort_compensates_a_panning_camera() -> None:
    # the camera pans 12 px/frame to the right for 10 frames: boxes jump left, then stop
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(1)
    world = cv2.GaussianBlur(rng.integers(0, 255, (300, 1400, 3), dtype=np.uint8), (0, 0), 2)
    objs = np.array([[300, 100, 330, 160], [345, 100, 375, 160], [390, 100, 420, 160]], float)  # still, close together
    pan = [0] * 5 + [24 * k for k in range(1, 11)] + [240] * 5
    results = {}
    for name in ("bytetrack", "botsort"):
        tr = make_tracker(name)
        ids = []
        for f, x in enumerate(pan):
            img = np.ascontiguousarray(world[:, x: x + 640])
            boxes = objs - [x, 0, x, 0]
            ids.append(tr.update(boxes, [0.9, 0.9, 0.9], [0, 0, 0], time=f, image=img))
        results[name] = ids
    assert all((i == [1, 2, 3]).all() for i in results["botsort"]), results["botsort"]
    assert not all((i == [1, 2, 3]).all() for i in results["bytetrack"])  # without GMC the ids break


# -- analytics ----------------------------------------------------------------------------------------

def _analytics_run(seed: int, anchor: str = "center"):
    an = Analytics.from_specs(list(clip.LINES.values()), list(clip.ZONES.values()), anchor=anchor)
    stage = TrackingStage("bytetrack", an, fps=clip.FPS)
    events = []
    for f, d in enumerate(clip.noisy_detections(GT, seed=seed)):
        _, ft = stage(Results(d["boxes"], d["scores"], d["classes"], NAMES, (clip.H, clip.W)), f)
        events += ft.events
    return ft, events, stage


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_line_and_zone_counts_are_the_true_counts(seed: int) -> None:
    ft, events, stage = _analytics_run(seed)
    assert ft.counts["lines"] == clip.EXPECTED_LINES
    zone = ft.counts["zones"]["right"]
    want = clip.EXPECTED_ZONES["right"]
    assert (zone["inside"], zone["entered"], zone["exited"]) == (want["inside"], want["entered"], want["exited"])
    assert zone["mean_dwell_s"] == pytest.approx(want["mean_dwell_s"], abs=2.5 / clip.FPS)
    assert [e["direction"] for e in events if e["type"] == "line" and e["name"] == "h"] == ["in", "in"]
    assert sum(e["type"] == "zone" and e["event"] == "enter" for e in events) == 3
    assert ft.record()["analytics"] == ft.counts
    assert any("line h: 2 in, 0 out" in s for s in stage.summary_lines())


def test_jitter_on_a_line_counts_once_each_way() -> None:
    line = CountLine("door", (0, 100), (200, 100))
    ys = [80, 90, 99, 101, 99, 102, 98, 103, 115, 120, 99, 85, 101, 99, 80]  # wobbles on the line, crosses down, up
    got = [line.update(7, (50.0, float(y)), tol=2.0) for y in ys]
    assert line.counts == {"in": 1, "out": 1}
    assert got.count("in") == 1 and got.count("out") == 1
    # crossing beyond the segment's ends counts nothing
    line2 = CountLine("short", (0, 100), (50, 100))
    for y in (80, 120):
        line2.update(1, (100.0, float(y)))
    assert line2.counts == {"in": 0, "out": 0}


def test_zone_membership_survives_occlusion_and_ends_with_the_track() -> None:
    z = parse_zone("shelf=0,0,100,0,100,100,0,100")
    pts = np.array([[50.0, 50.0]])
    tol = np.array([2.0])
    assert z.update([3], pts, tol, 0.0)[0]["event"] == "enter"
    z.update([3], pts, tol, 1.0)
    assert z.update([], np.zeros((0, 2)), np.zeros(0), 2.0) == []  # occluded: still inside
    assert z.to_dict()["inside"] == 1
    assert z.update([3], np.array([[101.0, 50.0]]), tol, 2.5) == []  # just outside the edge: jitter
    ev = z.expire(alive=set())
    assert ev == [{"type": "zone", "name": "shelf", "event": "exit", "track_id": 3, "dwell_s": 1.0}]
    assert z.to_dict()["mean_dwell_s"] == 1.0 and z.to_dict()["inside"] == 0


def test_bottom_anchor() -> None:
    an = Analytics([], [Zone("floor", np.array([[0, 150], [100, 150], [100, 200], [0, 200]]))], anchor="bottom")
    an.update(np.array([1]), np.array([[10, 50, 40, 180]]), 0.0, {1})
    assert an.to_dict()["zones"]["floor"]["inside"] == 1
    an2 = Analytics([], [Zone("floor", np.array([[0, 150], [100, 150], [100, 200], [0, 200]]))])
    an2.update(np.array([1]), np.array([[10, 50, 40, 180]]), 0.0, {1})
    assert an2.to_dict()["zones"]["floor"]["inside"] == 0


@pytest.mark.parametrize("spec, kind, message", [
    ("1,2,3", "line", "expected 4 numbers"),
    ("a=1,2,3,x", "line", "comma-separated"),
    ("1,1,1,1", "line", "same"),
    ("bad name=1,2,3,4", "line", "name may use"),
    ("0,0,10,0,10", "zone", "even count"),
    ("0,0,10,10,20,20", "zone", "no area"),
])
def test_bad_specs(spec: str, kind: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        (parse_line if kind == "line" else parse_zone)(spec)


def test_names_default_and_must_be_distinct() -> None:
    an = Analytics.from_specs(["0,0,10,10", "0,5,10,5"], ["0,0,5,0,5,5"])
    assert [x.name for x in an.lines] == ["line1", "line2"] and an.zones[0].name == "zone1"
    with pytest.raises(InputError, match="distinct names"):
        Analytics.from_specs(["a=0,0,10,10"], ["a=0,0,5,0,5,5"])


# -- settings ----------------------------------------------------------------------------------------

def test_yaml_settings(tmp_path: Path) -> None:
    p = tmp_path / "t.yaml"
    p.write_text("tracker_type: botsort\ntrack_high_thresh: 0.4\ntrack_buffer: 60\nclass_aware: true\n")
    cfg = load_config(p)
    assert (cfg.tracker_type, cfg.track_high_thresh, cfg.track_buffer, cfg.class_aware) == ("botsort", 0.4, 60, True)
    assert cfg.gmc_method == "sparseOptFlow" and cfg.kalman == "xywh"  # botsort defaults under the file
    assert type(make_tracker(p)).__name__ == "BoTSORT"
    # an Ultralytics tracker file reads as is
    p.write_text("tracker_type: botsort\ntrack_high_thresh: 0.25\ntrack_low_thresh: 0.1\nnew_track_thresh: 0.25\n"
                 "track_buffer: 30\nmatch_thresh: 0.8\nfuse_score: True\ngmc_method: None\nproximity_thresh: 0.5\n"
                 "appearance_thresh: 0.8\nwith_reid: False\nmodel: auto\n")
    assert load_config(p).gmc_method == "none"


@pytest.mark.parametrize("text, message", [
    ("track_buffer: 0\n", "track_buffer"),
    ("track_high_thresh: 1.5\n", "between 0 and 1"),
    ("track_low_thresh: 0.6\ntrack_high_thresh: 0.5\n", "must not exceed"),
    ("tracker_type: sort\n", "tracker_type"),
    ("trak_buffer: 30\n", "unknown tracker settings"),
    ("with_reid: true\n", "with_reid is not supported"),
    ("gmc_method: orb\n", "gmc_method"),
    ("- 1\n", "expected a mapping"),
    ("a: [\n", "not a readable YAML"),
])
def test_bad_yaml(tmp_path: Path, text: str, message: str) -> None:
    p = tmp_path / "t.yaml"
    p.write_text(text)
    with pytest.raises(InputError, match=message):
        load_config(p)


def test_bad_tracker_specs(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="expected bytetrack, botsort or a .yaml"):
        load_config("deepsort")
    with pytest.raises(InputError, match="not found"):
        load_config(tmp_path / "missing.yaml")


# -- Results.track_ids -------------------------------------------------------------------------------

def _tracked_result() -> Results:
    dense = np.zeros((3, 40, 60), bool)
    dense[0, 5:15, 5:20] = True
    dense[1, 20:30, 30:50] = True
    dense[2, 10:35, 2:8] = True
    masks = Masks.from_dense(dense)
    boxes = np.array([[5, 5, 20, 15], [30, 20, 50, 30], [2, 10, 8, 35]], np.float32)
    return Results(boxes, [0.9, 0.8, 0.7], [0, 0, 5], NAMES, (40, 60), masks=masks, track_ids=[4, -1, 9])


def test_track_ids_follow_their_detection_through_indexing_and_export() -> None:
    res = _tracked_result()
    sub = res[res.scores < 0.85]
    assert sub.track_ids.tolist() == [-1, 9]
    assert res[[2, 0]].track_ids.tolist() == [9, 4]
    full = res.to_dict(masks="rle")
    part = sub.to_dict(masks="rle")
    assert [d["track_id"] for d in full["detections"]] == [4, -1, 9]
    assert part["detections"][1]["mask_rle"] == full["detections"][2]["mask_rle"]  # the id's own mask
    poly = sub.to_dict(masks="polygon")["detections"][1]
    assert poly["track_id"] == 9 and poly["polygons"] == res.to_dict(masks="polygon")["detections"][2]["polygons"]
    assert "track_id" not in Results(res.boxes, res.scores, res.class_ids, NAMES, (40, 60)).to_dict()["detections"][0]


@pytest.mark.parametrize("ids, message", [([1, 2], "3 detections but 2 track_ids"), ([0.5, 1, 2], "must be integers")])
def test_track_ids_are_checked(ids, message: str) -> None:
    res = _tracked_result()
    with pytest.raises(InputError, match=message):
        Results(res.boxes, res.scores, res.class_ids, NAMES, (40, 60), track_ids=ids)


def test_plot_draws_ids_and_trails() -> None:
    pytest.importorskip("cv2")
    res = _tracked_result()
    img = np.zeros((40, 60, 3), np.uint8)
    trail = {4: np.array([[55, 38], [45, 38], [35, 38]], np.float32)}
    with_trail = res.plot(img, masks=False, boxes=False, labels=False, trails=trail)
    without = res.plot(img, masks=False, boxes=False, labels=False)
    assert with_trail[38, 36:55].any(axis=1).sum() >= 15 and not without[38, 36:55].any()
    # tracked detections are coloured by track id, untracked ones by class
    a = res.plot(img, labels=False, masks=False)
    b = Results(res.boxes, res.scores, res.class_ids, NAMES, (40, 60), track_ids=[5, -1, 9]).plot(img, labels=False, masks=False)
    assert not np.array_equal(a[5, 5:20], b[5, 5:20]) and np.array_equal(a[20, 30:50], b[20, 30:50])


def test_camera_motion_is_not_fooled_by_moving_objects_on_a_plain_background() -> None:
    # regression: the corners of moving objects alone once gave a bogus 7 px "camera motion"
    pytest.importorskip("cv2")
    from edgeseg.live.tracking.botsort import CameraMotion

    frames = clip.render(3)
    gmc = CameraMotion("sparseOptFlow", downscale=2)
    for img in frames:
        np.testing.assert_allclose(gmc(img), np.eye(2, 3))
