"""A procedural numpy ray caster for synthetic training and test clips.

Scenes are a floor, optionally a back wall, and a handful of spheres and rotated boxes with procedural textures
(checkers and stripes), lit by a directional light. A camera orbits the scene while looking at its centre. Every
pixel gets its exact camera-space normal (OpenGL axes: +x right, +y up, +z toward the camera), its z-depth and a
validity mask (rays that hit nothing see the sky and are invalid). Clips are written in the clip format of
`normalcrafter_pipeline.formats.clips`.
"""

from __future__ import annotations

import os

import numpy as np

from ..formats.clips import write_clip

_NO_HIT = np.inf


def look_at(eye: np.ndarray, target: np.ndarray, up=(0.0, 1.0, 0.0)) -> np.ndarray:
    """Camera-to-world 4x4 matrix of an OpenGL camera at `eye` looking at `target` (the camera looks down -z)."""
    eye, target = np.asarray(eye, np.float64), np.asarray(target, np.float64)
    back = eye - target
    back /= np.linalg.norm(back)
    right = np.cross(np.asarray(up, np.float64), back)
    right /= np.linalg.norm(right)
    true_up = np.cross(back, right)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, true_up, back, eye
    return pose


def _rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q


def random_scene(rng: np.random.Generator, num_objects: int | None = None) -> dict:
    """A random scene description: a floor, maybe a back wall, and spheres and boxes standing near the origin."""
    if num_objects is None:
        num_objects = int(rng.integers(2, 6))
    objects = [
        {"kind": "plane", "point": np.zeros(3), "normal": np.array([0.0, 1.0, 0.0])},
    ]
    if rng.random() < 0.7:
        objects.append(
            {"kind": "plane", "point": np.array([0.0, 0.0, -3.0 - rng.random()]), "normal": np.array([0.0, 0.0, 1.0])}
        )
    for _ in range(num_objects):
        center = np.array([rng.uniform(-1.8, 1.8), 0.0, rng.uniform(-1.8, 1.2)])
        if rng.random() < 0.5:
            radius = rng.uniform(0.3, 0.8)
            center[1] = radius if rng.random() < 0.7 else radius + rng.uniform(0.2, 1.0)
            objects.append({"kind": "sphere", "center": center, "radius": radius})
        else:
            half = rng.uniform(0.2, 0.6, size=3)
            center[1] = rng.uniform(0.3, 1.2)
            objects.append({"kind": "box", "center": center, "half": half, "rotation": _rotation(rng)})
    for obj in objects:
        obj["color_a"] = rng.uniform(0.15, 1.0, size=3)
        obj["color_b"] = rng.uniform(0.0, 0.6, size=3)
        obj["pattern"] = rng.choice(["checker", "stripes", "plain"])
        obj["frequency"] = rng.uniform(1.5, 5.0)
    light = np.array([rng.uniform(-1, 1), rng.uniform(0.6, 1.5), rng.uniform(0.2, 1.0)])
    sky = rng.uniform(0.5, 1.0, size=3)
    return {"objects": objects, "light": light / np.linalg.norm(light), "sky": sky}


def _intersect(obj: dict, origin: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance along each ray `[N]` (inf on a miss) and the world normal `[N, 3]` at the hit."""
    eps = 1e-6
    if obj["kind"] == "plane":
        denom = dirs @ obj["normal"]
        with np.errstate(divide="ignore", invalid="ignore"):
            t = ((obj["point"] - origin) @ obj["normal"]) / denom
        t = np.where((np.abs(denom) > eps) & (t > eps), t, _NO_HIT)
        return t, np.broadcast_to(obj["normal"], dirs.shape)
    if obj["kind"] == "sphere":
        offset = origin - obj["center"]
        b = dirs @ offset
        c = offset @ offset - obj["radius"] ** 2
        disc = b * b - c
        root = np.sqrt(np.maximum(disc, 0.0))
        t_near, t_far = -b - root, -b + root
        t = np.where(t_near > eps, t_near, t_far)
        t = np.where((disc > 0) & (t > eps), t, _NO_HIT)
        points = origin + dirs * np.where(np.isfinite(t), t, 0.0)[:, None]
        return t, (points - obj["center"]) / obj["radius"]
    # box: slab test in the box's own frame
    rot = obj["rotation"]
    local_origin = (origin - obj["center"]) @ rot
    local_dirs = dirs @ rot
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / local_dirs
        t0 = (-obj["half"] - local_origin) * inv
        t1 = (obj["half"] - local_origin) * inv
    t_min, t_max = np.minimum(t0, t1), np.maximum(t0, t1)
    t_enter, axis = t_min.max(axis=1), t_min.argmax(axis=1)
    t_exit = t_max.min(axis=1)
    hit = (t_enter <= t_exit) & (t_enter > eps)
    t = np.where(hit, t_enter, _NO_HIT)
    local_normal = np.zeros_like(local_dirs)
    rows = np.arange(len(dirs))
    local_normal[rows, axis] = -np.sign(local_dirs[rows, axis])
    return t, local_normal @ rot.T


def _texture(obj: dict, points: np.ndarray) -> np.ndarray:
    if obj["kind"] == "box":
        points = (points - obj["center"]) @ obj["rotation"]
    f = obj["frequency"]
    if obj["pattern"] == "checker":
        weight = (np.floor(points * f).sum(axis=1) % 2)[:, None]
    elif obj["pattern"] == "stripes":
        weight = (0.5 + 0.5 * np.sin(points[:, 0] * f * 3.0 + points[:, 2] * f))[:, None]
    else:
        weight = np.zeros((len(points), 1))
    return obj["color_a"] * (1.0 - weight) + obj["color_b"] * weight


def render_frame(scene: dict, pose: np.ndarray, intrinsics, height: int, width: int) -> dict:
    """Ray-cast one frame. Returns `rgb` uint8 (H, W, 3), `normal` float32 (H, W, 3) camera-space unit normals
    facing the camera (zeros where invalid), `depth` float32 (H, W) z-depth (0 where invalid), `mask` bool (H, W)."""
    fx, fy, cx, cy = intrinsics
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5
    cam_dirs = np.stack([(xs - cx) / fx, -(ys - cy) / fy, -np.ones_like(xs)], axis=-1).reshape(-1, 3)
    cam_dirs /= np.linalg.norm(cam_dirs, axis=1, keepdims=True)
    rotation, origin = pose[:3, :3], pose[:3, 3]
    dirs = cam_dirs @ rotation.T

    best_t = np.full(len(dirs), _NO_HIT)
    best_normal = np.zeros_like(dirs)
    best_obj = np.full(len(dirs), -1)
    for index, obj in enumerate(scene["objects"]):
        t, normal = _intersect(obj, origin, dirs)
        closer = t < best_t
        best_t = np.where(closer, t, best_t)
        best_normal = np.where(closer[:, None], normal, best_normal)
        best_obj = np.where(closer, index, best_obj)

    valid = np.isfinite(best_t)
    # Face every normal toward the camera (planes are two-sided).
    facing = np.sign(-(best_normal * dirs).sum(axis=1, keepdims=True))
    best_normal = best_normal * np.where(facing == 0, 1.0, facing)
    points = origin + dirs * np.where(valid, best_t, 0.0)[:, None]

    color = np.broadcast_to(scene["sky"], dirs.shape).copy()
    shade = 0.35 + 0.65 * np.clip(best_normal @ scene["light"], 0.0, 1.0)
    for index, obj in enumerate(scene["objects"]):
        sel = best_obj == index
        if sel.any():
            color[sel] = _texture(obj, points[sel]) * shade[sel, None]

    cam_normal = best_normal @ rotation  # world -> camera: R^T n, row-vector form
    cam_normal = np.where(
        valid[:, None], cam_normal / np.maximum(np.linalg.norm(cam_normal, axis=1, keepdims=True), 1e-12), 0.0
    )
    depth = np.where(valid, best_t * -cam_dirs[:, 2], 0.0)
    return {
        "rgb": np.round(np.clip(color, 0.0, 1.0) * 255.0).astype(np.uint8).reshape(height, width, 3),
        "normal": cam_normal.astype(np.float32).reshape(height, width, 3),
        "depth": depth.astype(np.float32).reshape(height, width),
        "mask": valid.reshape(height, width),
    }


def camera_path(rng: np.random.Generator, num_frames: int) -> np.ndarray:
    """`[F, 4, 4]` camera-to-world poses orbiting the scene centre, with a slowly changing height and distance."""
    start = rng.uniform(-0.6, 0.6)
    sweep = rng.uniform(-0.8, 0.8)
    radius0, radius1 = rng.uniform(4.0, 6.0, size=2)
    height0, height1 = rng.uniform(1.0, 3.0, size=2)
    target = np.array([rng.uniform(-0.5, 0.5), rng.uniform(0.2, 0.8), rng.uniform(-0.8, 0.0)])
    poses = []
    for s in np.linspace(0.0, 1.0, num_frames):
        angle = start + sweep * s
        radius = radius0 + (radius1 - radius0) * s
        eye = np.array([radius * np.sin(angle), height0 + (height1 - height0) * s, radius * np.cos(angle)])
        poses.append(look_at(eye, target))
    return np.stack(poses)


def render_clip(
    folder: str | os.PathLike | None,
    num_frames: int = 16,
    height: int = 128,
    width: int = 128,
    seed: int = 0,
    fov_degrees: float | None = None,
    fps: float = 7.0,
    normal_format: str = "png",
) -> dict:
    """Render one random clip; write it to `folder` in the clip format unless `folder` is None.

    Returns the arrays (`rgb`, `normal`, `depth`, `mask`) and `meta` (fps, axis convention, intrinsics, poses).
    """
    for name, value in (("num_frames", num_frames), ("height", height), ("width", width)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` is {value!r}; it must be a positive integer.")
    rng = np.random.default_rng(seed)
    scene = random_scene(rng)
    if fov_degrees is None:
        fov_degrees = float(rng.uniform(45.0, 70.0))
    fx = fy = 0.5 * width / np.tan(np.radians(fov_degrees) / 2.0)
    intrinsics = [float(fx), float(fy), width / 2.0, height / 2.0]
    poses = camera_path(rng, num_frames)
    frames = [render_frame(scene, pose, intrinsics, height, width) for pose in poses]
    clip = {key: np.stack([f[key] for f in frames]) for key in ("rgb", "normal", "depth", "mask")}
    meta = {"fps": float(fps), "axis_convention": "opengl_camera", "intrinsics": intrinsics, "poses": poses.tolist()}
    if folder is not None:
        write_clip(
            folder,
            clip["rgb"],
            clip["normal"],
            mask=clip["mask"],
            depth=clip["depth"],
            fps=fps,
            normal_format=normal_format,
            intrinsics=intrinsics,
            poses=meta["poses"],
            source="normalcrafter_pipeline synthetic renderer",
        )
    clip["meta"] = meta
    return clip


def render_dataset(
    root: str | os.PathLike, num_clips: int, frames: int = 16, height: int = 128, width: int = 128, seed: int = 0
) -> list[str]:
    """Render `num_clips` clips into `root/clip_00000`, ... and return their folders."""
    if not isinstance(num_clips, int) or num_clips < 1:
        raise ValueError(f"`num_clips` is {num_clips!r}; it must be a positive integer.")
    folders = []
    for index in range(num_clips):
        folder = os.path.join(os.fspath(root), f"clip_{index:05d}")
        render_clip(folder, num_frames=frames, height=height, width=width, seed=seed * 100003 + index)
        folders.append(folder)
    return folders
