"""Completion of what no source saw, and the face lined up with the landmarks: fill_unseen keeps
every seen colour, the far unseen settles to the seen colours' median, the mouth interior is
shaded like a real one, and landmark_offsets moves the face's landmarks onto observed ones."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from savatar.core.build.build import SETTLE_DISTANCE, fill_unseen, ring_colours
from savatar.core.build.face_offsets import MAX_OFFSET, landmark_points, landmark_offsets
from savatar.core.build.mouth_interior import curtain_colours, lip_curtain, mouth_interior_colours
from savatar.core.drive.tracking import intrinsics_for, mediapipe_indices, project_tracking
from savatar.core.head.head_model import HeadModel
from savatar.core.head.open_head import load_open_head_data


@pytest.fixture(scope="module")
def data():
    return load_open_head_data()


def test_mirroring_never_overwrites_a_seen_side():
    # Both sides seen, in different colours (a turned face lit from one side): nothing may be
    # mirrored over either; only the unseen middle strip is filled.
    rng = np.random.default_rng(0)
    pos = rng.uniform(-0.05, 0.05, (2000, 3))
    x = pos[:, 0]
    colour = np.zeros((2000, 3))
    colour[x < -0.01] = [1.0, 0.0, 0.0]
    colour[x > 0.01] = [0.0, 0.0, 1.0]
    seen = np.abs(x) > 0.01
    out = fill_unseen(pos, colour, seen, np.zeros(2000, bool), np.full((2000, 3), 0.5))
    np.testing.assert_array_equal(out[seen], colour[seen])
    assert np.all(out[~seen].sum(1) > 0.5)  # the strip took a colour from its neighbours


def test_trust_fades_towards_the_edge_of_what_was_seen():
    # Seen for x < 0, unseen beyond: trust falls over a few millimetres before the edge (a soft
    # blend into the filled colours, not a seam), is never raised, and stays whole far inside.
    from scipy.spatial import cKDTree

    from savatar.core.build.build import FEATHER_NEIGHBOURS, _feathered

    rng = np.random.default_rng(3)
    pos = rng.uniform(-0.03, 0.03, (6000, 3)) * [1.0, 1.0, 0.1]  # a 6 cm patch of surface
    raw = (pos[:, 0] < 0).astype(np.float64)
    _, nb = cKDTree(pos).query(pos, k=FEATHER_NEIGHBOURS)
    trust = _feathered(nb, raw)
    assert np.all(trust <= raw)
    assert np.all(trust[pos[:, 0] < -0.012] == 1.0)
    band = (pos[:, 0] > -0.003) & (pos[:, 0] < 0)
    assert 0.1 < trust[band].mean() < 0.9  # in between at the edge
    inner, outer = trust[(pos[:, 0] > -0.006) & (pos[:, 0] < -0.003)], trust[band]
    assert inner.mean() > outer.mean()  # falling towards the edge


def test_far_from_what_was_seen_colour_settles_to_the_median():
    # A head of hair seen at the front (z > 0): mostly brown with a bright streak. The back,
    # far from anything seen, takes the brown median, not the streak dragged from the rim.
    rng = np.random.default_rng(1)
    direction = rng.normal(size=(4000, 3))
    pos = 0.09 * direction / np.linalg.norm(direction, axis=1, keepdims=True)
    seen = pos[:, 2] > 0.02
    brown = np.array([0.35, 0.22, 0.12])
    colour = np.tile(brown, (4000, 1))
    streak = seen & (pos[:, 2] < 0.03) & (pos[:, 0] > 0)
    colour[streak] = [0.95, 0.9, 0.8]
    out = fill_unseen(pos, colour, seen, np.zeros(4000, bool), np.full((4000, 3), 0.5))
    back = pos[:, 2] < -0.08
    assert back.sum() > 50
    assert SETTLE_DISTANCE < 0.1  # the back is beyond it
    np.testing.assert_allclose(out[back], np.tile(brown, (back.sum(), 1)), atol=1e-6)
    np.testing.assert_array_equal(out[seen], colour[seen])


def test_mouth_interior_dark_cavity_shaded_teeth(data):
    v = np.asarray(data.v_template)
    regions = {n: np.asarray(data.vertex_regions[n]) for n in ("upper_teeth", "lower_teeth", "mouth_cavity")}
    teeth_ids = np.concatenate([regions["upper_teeth"], regions["lower_teeth"]])
    pos = np.concatenate([v[teeth_ids], v[regions["mouth_cavity"]]])
    teeth = np.arange(len(pos)) < len(teeth_ids)
    out = mouth_interior_colours(pos, teeth, ~teeth)
    lum = out.mean(1)
    x = np.abs(pos[:, 0])
    front_teeth = teeth & (x < 0.005)
    side_teeth = teeth & (x > 0.8 * x[teeth].max())
    assert lum[front_teeth].min() > 0.75  # white front teeth
    assert lum[side_teeth].max() < 0.5 * lum[front_teeth].mean()  # in shadow at the corners
    assert np.median(lum[~teeth]) < 0.25  # a dark cavity
    red = out[~teeth][:, 0] > 1.5 * out[~teeth][:, 1]
    assert red.mean() > 0.9  # tongue and cavity are reddish, never grey or white


def test_lip_curtain_opens_into_teeth_over_a_dark_cavity(data):
    """The triangles between the lips of the open head: slivers when closed, the opening when the
    jaw opens; coloured as an open mouth seen from the front (bright teeth at the top, dark below,
    dark wherever they face forwards when closed)."""
    model = HeadModel(data)
    pose = torch.zeros(1, 15)
    pose[0, 6] = 0.35
    with torch.no_grad():
        closed, opened = model().vertices[0].double().numpy(), model(pose=pose).vertices[0].double().numpy()
    faces = np.asarray(data.faces)
    corners = closed[faces[data.lmk_faces[[61, 291]]]].mean(1)
    curtain = lip_curtain(closed, opened, faces, float(np.abs(corners[:, 0]).mean()))
    assert 50 < curtain.sum() < 0.05 * len(faces)
    centres = opened[faces[curtain]].mean(1)
    upper_lip, lower_lip = opened[faces[data.lmk_faces[[0, 17]]]].mean(1)[:, 1]
    assert lower_lip < np.median(centres[:, 1]) < upper_lip  # it spans the opening, between the lips
    assert np.abs(centres[:, 0]).max() < np.abs(corners[:, 0]).mean()

    lum = curtain_colours(centres, np.zeros(len(centres), bool)).mean(1)
    height = (centres[:, 1] - centres[:, 1].min()) / np.ptp(centres[:, 1])
    assert lum[height > 0.7].max() > 0.7 and lum[height < 0.5].max() < 0.3  # teeth above, cavity below
    assert curtain_colours(centres, np.ones(len(centres), bool)).mean(1).max() < 0.3


def test_landmark_offsets_move_the_face_onto_the_landmarks(data):
    # A frontal source whose observed landmarks are the model's own, with the whole nose shifted
    # 3 px sideways (a nose a little off the shape modes' centre): the offsets move the nose most
    # of the way, and the far side of the face stays put.
    import mediapipe as mp

    model = HeadModel(data)
    n_expr, shape = data.exprdirs.shape[2], np.zeros(data.shapedirs.shape[2])
    expr, pose = np.zeros(n_expr, np.float32), np.zeros(15, np.float32)
    translation = np.array([0.0, 0.0, -0.45], np.float32)
    K = intrinsics_for(512, 512)
    with torch.no_grad():
        verts = model(translation=torch.as_tensor(translation)[None]).vertices[0].double().numpy()
    uv = project_tracking(landmark_points(verts, data), K)[:, :2]
    observed = np.zeros((478, 2))
    observed[mediapipe_indices(data)] = uv
    moved = np.isin(np.arange(478), [i for e in mp.solutions.face_mesh_connections.FACEMESH_NOSE for i in e])
    observed[moved] += [3.0, 0.0]
    src = SimpleNamespace(landmarks=observed, K=K, expr=expr, pose=pose, translation=translation)
    offsets = landmark_offsets(data, shape, [src])
    face = np.asarray(data.vertex_regions["face"])
    outside = np.setdiff1d(np.arange(len(offsets)), face)
    assert not offsets[outside].any()
    assert np.abs(offsets).max() <= MAX_OFFSET
    with torch.no_grad():
        grown = model(translation=torch.as_tensor(translation)[None],
                      static_offset=torch.as_tensor(offsets, dtype=torch.float32)).vertices[0].double().numpy()
    after = np.zeros((478, 2))
    after[mediapipe_indices(data)] = project_tracking(landmark_points(grown, data), K)[:, :2]
    shift = after[:, 0] - (observed[:, 0] - 3.0 * moved)
    far = ~moved & (np.linalg.norm(observed - observed[1], axis=1) > 50)
    print(f"moved landmarks: {shift[moved].mean():.2f} px of 3; far ones: {np.abs(shift[far]).max():.2f} px max")
    assert shift[moved].mean() > 1.5
    assert np.abs(shift[far]).max() < 0.5  # measured 2.49 px moved, 0.08 px far (no model runs here)


def _frontal_source(data, observed_from):
    """A frontal source (expression 0) whose observed landmarks are observed_from(uvz) of the
    model's own projected landmarks uvz (L, 3) (pixels, depth in metres), in MediaPipe's order."""
    model = HeadModel(data)
    expr, pose = np.zeros(data.exprdirs.shape[2], np.float32), np.zeros(15, np.float32)
    translation = np.array([0.0, 0.0, -0.45], np.float32)
    K = intrinsics_for(512, 512)
    with torch.no_grad():
        verts = model(translation=torch.as_tensor(translation)[None]).vertices[0].double().numpy()
    uvz = project_tracking(landmark_points(verts, data), K)
    values = observed_from(uvz, K)
    observed = np.zeros((478, values.shape[1]))
    observed[mediapipe_indices(data)] = values
    return SimpleNamespace(landmarks=observed, K=K, expr=expr, pose=pose, translation=translation)


def _mediapipe_3d(uvz, K, depth_change=None):
    """MediaPipe's landmark convention: pixels, and z the depth relative to the face's in pixel
    units of x (depth_change (L,) metres added to the true depth first)."""
    depth = uvz[:, 2] + (0 if depth_change is None else depth_change)
    return np.concatenate([uvz[:, :2], ((depth - depth.mean()) * K[0, 0] / uvz[:, 2].mean())[:, None]], 1)


def test_landmark_offsets_take_the_noses_depth_from_mediapipes(data):
    # MediaPipe says the nose stands 4 mm less far out than the model's: the nose tip moves back
    # (part way: MediaPipe's depth is a guess), the cheeks stay; a depth that agrees moves nothing.
    import mediapipe as mp

    from savatar.core.build.face_offsets import DEPTH_WEIGHT

    nose = np.isin(mediapipe_indices(data), [i for e in mp.solutions.face_mesh_connections.FACEMESH_NOSE for i in e])
    agree = landmark_offsets(data, np.zeros(data.shapedirs.shape[2]), [_frontal_source(data, _mediapipe_3d)])
    assert np.abs(agree).max() < 2e-4
    flatter = _frontal_source(data, lambda uvz, K: _mediapipe_3d(uvz, K, 0.004 * nose))
    offsets = landmark_offsets(data, np.zeros(data.shapedirs.shape[2]), [flatter])
    template = np.asarray(data.v_template)
    tip = np.argmax(template[:, 2] - 10 * np.abs(template[:, 0]))  # the most forward vertex near x = 0
    cheek = np.argmin(np.linalg.norm(template - (template[tip] + [0.05, 0.0, -0.03]), axis=1))
    print(f"nose tip moved {1e3 * offsets[tip, 2]:.2f} mm in depth, cheek {1e3 * offsets[cheek, 2]:.2f} mm")
    assert -0.004 * DEPTH_WEIGHT * 1.3 < offsets[tip, 2] < -0.004 * DEPTH_WEIGHT * 0.4  # backwards (world z is forward)
    assert abs(offsets[cheek, 2]) < 0.3 * abs(offsets[tip, 2])


def test_landmark_offsets_leave_an_open_mouth_to_the_expression(data):
    # The portrait's mouth is open where the fitted expression's is closed: the inner lips'
    # residual is expression, so the static offsets do not pull the lips apart for good.
    from savatar.core.build.face_offsets import EXPRESSION_LANDMARKS

    inner = np.array([i in EXPRESSION_LANDMARKS and i < 468 for i in mediapipe_indices(data)])

    def mouth_open(uvz, K):
        uv = uvz[:, :2].copy()
        centre = uv[inner].mean(0)
        uv[inner, 1] += np.sign(uv[inner, 1] - centre[1]) * 8.0  # 16 px apart
        return uv

    offsets = landmark_offsets(data, np.zeros(data.shapedirs.shape[2]), [_frontal_source(data, mouth_open)])
    assert np.abs(offsets).max() < 2e-4


def test_far_unseen_settles_to_a_given_colour_per_group():
    # The cranium (group 1) seen only at its front, where it is forehead skin: told the hair's
    # colour, its back settles to that; the other group keeps settling to its own median.
    rng = np.random.default_rng(2)
    direction = rng.normal(size=(4000, 3))
    pos = 0.09 * direction / np.linalg.norm(direction, axis=1, keepdims=True)
    group = (pos[:, 1] > 0).astype(np.int64)
    seen = pos[:, 2] > 0.02
    skin, hair = np.array([0.8, 0.6, 0.5]), np.array([0.1, 0.08, 0.06])
    colour = np.tile(skin, (4000, 1))
    out = fill_unseen(pos, colour, seen, np.zeros(4000, bool), np.full((4000, 3), 0.5), group=group,
                      settle={1: hair})
    back = pos[:, 2] < -0.08
    np.testing.assert_allclose(out[back & (group == 1)], np.tile(hair, ((back & (group == 1)).sum(), 1)), atol=1e-6)
    np.testing.assert_allclose(out[back & (group == 0)], np.tile(skin, ((back & (group == 0)).sum(), 1)), atol=1e-6)
    np.testing.assert_array_equal(out[seen], colour[seen])


def test_the_neck_wears_around_the_back_what_its_front_wears():
    """A neck and shoulders seen from the front only: skin above a white collar above a dark suit,
    the suit's front split by a white shirt. Around the back, the unseen part takes at each height
    what the front shows there (before: skin all round, under the suit's front)."""
    rng = np.random.default_rng(3)
    n = 6000
    angle, y = rng.uniform(-np.pi, np.pi, n), rng.uniform(-0.16, -0.08, n)
    pos = np.stack([0.06 * np.sin(angle), y, 0.06 * np.cos(angle)], 1)
    seen = pos[:, 2] > 0.02
    skin, collar, suit = np.array([0.8, 0.6, 0.5]), np.array([0.95, 0.95, 0.95]), np.array([0.1, 0.1, 0.15])
    colour = np.tile(skin, (n, 1))
    colour[y < -0.11] = collar
    colour[(y < -0.125) & (np.abs(pos[:, 0]) > 0.01)] = suit  # the shirt shows down the middle
    back = ~seen
    ring = ring_colours(pos, colour, seen, back, fallback=skin)
    for lo, hi, want in ((-0.10, -0.08, skin), (-0.12, -0.114, collar), (-0.16, -0.135, suit)):
        band = back & (y > lo) & (y < hi)
        np.testing.assert_allclose(ring[band], np.tile(want, (band.sum(), 1)), atol=0.02)
    np.testing.assert_array_equal(ring[~back], np.tile(skin, ((~back).sum(), 1)))  # not members: fallback
    out = fill_unseen(pos, colour, seen, np.zeros(n, bool), np.full((n, 3), 0.5), settle={0: ring})
    far = back & (pos[:, 2] < -0.05) & (y < -0.135)
    assert np.abs(out[far] - suit).max() < 0.1  # settled to the suit, far from the front
    np.testing.assert_array_equal(out[seen], colour[seen])


def _synthetic_portrait(hair: tuple[float, float, float]):
    """A 200x200 portrait: blue background, a head of `hair` colour, a skin face oval whose
    'landmarks' are 478 points on the oval's outline and inside it, the eyes' outer corners at
    row 100; person mask = the head."""
    h = w = 200
    yy, xx = np.mgrid[0:h, 0:w]
    image = np.zeros((h, w, 3), np.float32)
    image[:] = [0.1, 0.2, 0.9]
    head = ((xx - 100) / 60.0) ** 2 + ((yy - 100) / 80.0) ** 2 <= 1
    image[head] = hair
    face = ((xx - 100) / 40.0) ** 2 + ((yy - 115) / 50.0) ** 2 <= 1
    image[face] = [0.85, 0.65, 0.55]
    t = np.linspace(0, 2 * np.pi, 478, endpoint=False)
    r = np.sqrt(np.linspace(0.05, 1.0, 478))
    marks = np.stack([100 + 40 * r * np.cos(t), 115 + 50 * r * np.sin(t)], 1)
    marks[33], marks[263] = [70, 100], [130, 100]  # the eyes' outer corners
    return SimpleNamespace(image=image, landmarks=marks, mask=head.astype(np.float32))


def test_hair_colour_is_the_top_of_the_head_not_face_or_background():
    from savatar.core.build.hair_colour import hair_colour

    for hair in ((0.3, 0.2, 0.1), (0.9, 0.85, 0.6)):  # dark and blond
        np.testing.assert_allclose(hair_colour([_synthetic_portrait(hair)]), hair, atol=1e-6)
    # The head cut by the frame above the eyes: no rim there, no estimate.
    src = _synthetic_portrait((0.3, 0.2, 0.1))
    for key in ("image", "mask"):
        setattr(src, key, getattr(src, key)[90:])
    src.landmarks = src.landmarks - [0, 90]
    assert hair_colour([src]) is None


def test_long_hair_is_hair_falling_beside_the_jaw():
    from savatar.core.build.hair_colour import CHIN, JAW_ANGLES, long_hair

    hair = (0.3, 0.2, 0.1)

    def portrait(beside):
        """The synthetic portrait with its jaw's angles and chin placed, and beside the jaw (both
        sides, where long hair falls) the background or, given a colour, the person in it."""
        src = _synthetic_portrait(hair)
        src.landmarks[list(JAW_ANGLES)] = [[68, 140], [132, 140]]
        src.landmarks[CHIN] = [100, 165]
        for x0 in (35, 145):
            src.image[135:170, x0:x0 + 30] = [0.1, 0.2, 0.9] if beside is None else beside
            src.mask[135:170, x0:x0 + 30] = 0.0 if beside is None else 1.0
        return src

    assert not long_hair([portrait(None)], np.array(hair))  # short hair: background beside the jaw
    assert long_hair([portrait(hair)], np.array(hair))
    assert not long_hair([portrait((0.85, 0.65, 0.55))], np.array(hair))  # a bare neck and shoulders
    assert not long_hair([portrait(hair)], None)  # no hair colour known
    # A webcam's framing: dark shoulders beside the jaw, the background above them (grin_gaze's
    # jacket, talk_glasses' shirt read as long hair before).
    shoulders = portrait(hair)
    for x0 in (35, 145):
        shoulders.image[100:135, x0:x0 + 30] = [0.1, 0.2, 0.9]
        shoulders.mask[100:135, x0:x0 + 30] = 0.0
    assert not long_hair([shoulders], np.array(hair))


def test_cheek_sides_need_the_landmarks_that_place_them(data):
    """cheek_sides on the open head: the cheeks below the eyes and the head's sides down to the
    jaw's angles; on a model whose landmark embedding lacks the jaw's angles (a FLAME embedding
    has about a hundred of MediaPipe's points), none rather than an error."""
    from dataclasses import replace

    from savatar.core.build.build import cheek_sides
    from savatar.core.build.hair_colour import JAW_ANGLES

    verts = np.asarray(data.v_template, np.float64)
    labels, names = data.face_regions()
    centres = verts[data.faces].mean(1)
    cheeks = cheek_sides(centres, labels, names, verts, data)
    face = labels == names.index("face")
    assert cheeks.any() and (centres[cheeks, 1] < 0.0).all()  # below the eyes (at y = 0 on the template)
    assert cheeks[face].mean() > 0.3 and cheeks[~face].any()
    keep = ~np.isin(np.asarray(data.lmk_mediapipe), JAW_ANGLES)
    fewer = replace(data, lmk_mediapipe=np.asarray(data.lmk_mediapipe)[keep], lmk_faces=np.asarray(data.lmk_faces)[keep],
                    lmk_bary=np.asarray(data.lmk_bary)[keep])
    assert not cheek_sides(centres, labels, names, verts, fewer).any()
