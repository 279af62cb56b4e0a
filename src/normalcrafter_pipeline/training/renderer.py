"""A procedural numpy ray caster for synthetic training and test clips.

Scenes are a floor, optionally a back wall, and a handful of spheres and rotated boxes with procedural textures
(checkers and stripes), lit by a directional light. A camera orbits the scene while looking at its centre. Every
pixel gets its exact camera-space normal (OpenGL axes: +x right, +y up, +z toward the camera), its z-depth and a
validity mask (rays that hit nothing see the sky and are invalid). Clips are written in the clip format of
`normalcrafter_pipeline.formats.clips`.

`Nuisances` adds what makes one frame ambiguous while the clip around it is not: sensor noise and exposure flicker
that change from frame to frame, moving occluders, motion blur of varying length, and low-texture surfaces under
flat light. The ground truth stays exact: normals, depth and masks are those of the sharp scene at the frame's
instant, whatever the pixels show. Moving occluders are scene geometry: their normals are ground truth and their
pixels are valid, but their depth is written as 0 (unknown), because depth in the clip format serves the
reprojection metric, which assumes a static scene.

The renderer also knows what each pixel shows: `render_clip` returns the kind of object (`OBJECT_KINDS`) and its
material (`MATERIALS`) per pixel, the labels a semantic teacher is trained on (`training.semantic_teacher`).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from ..formats.clips import write_clip

_NO_HIT = np.inf
# What a pixel can show, and its surface pattern: label indices of the `kind` and `material` maps of `render_clip`.
OBJECT_KINDS = ("sky", "floor", "wall", "sphere", "box", "occluder")
MATERIALS = ("sky", "plain", "checker", "stripes")
# Shading is ambient + (1 - ambient) * max(n . l, 0); flat light is nearly all ambient.
_AMBIENT, _FLAT_AMBIENT = 0.35, 0.9
# Each nuisance draws from its own random stream, so switching one on does not change the draws of another.
_STREAMS = {"flat_light": 1, "occluders": 2, "motion_blur": 3, "flicker": 4, "noise": 5}


@dataclasses.dataclass(frozen=True)
class Nuisances:
    """Capture effects that make a single frame ambiguous and its neighbours informative. All off by default.

    Args:
        noise_std: Gaussian sensor noise; each frame draws its standard deviation from `[0, noise_std]` (pixel
            values in [0, 1]), so clean and noisy frames alternate at random.
        flicker: exposure flicker; each frame's brightness is multiplied by a gain drawn from
            `[1 - flicker, 1 + flicker]`.
        occluders: number of spheres that fly between the camera and the scene during the clip.
        motion_blur: each frame's shutter stays open for a fraction drawn from `[0, motion_blur]` of the interval
            between frames; the frame averages `blur_samples` renders over that time (camera and occluders move).
        blur_samples: renders averaged per blurred frame; odd, so the sharp instant is one of them.
        flat_light: probability that a clip has low-texture (plain) surfaces under flat, nearly ambient light.
    """

    noise_std: float = 0.0
    flicker: float = 0.0
    occluders: int = 0
    motion_blur: float = 0.0
    blur_samples: int = 5
    flat_light: float = 0.0

    def __post_init__(self):
        for name in ("noise_std", "motion_blur"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"`{name}` is {getattr(self, name)!r}; it must be >= 0 (0 turns it off).")
        if not 0 <= self.flicker < 1:
            raise ValueError(f"`flicker` is {self.flicker!r}; it must be in [0, 1) (0 turns it off).")
        if not 0 <= self.flat_light <= 1:
            raise ValueError(f"`flat_light` is {self.flat_light!r}; it is a probability, in [0, 1].")
        if not isinstance(self.occluders, int) or self.occluders < 0:
            raise ValueError(f"`occluders` is {self.occluders!r}; it must be a non-negative integer.")
        if not isinstance(self.blur_samples, int) or self.blur_samples < 1 or self.blur_samples % 2 == 0:
            raise ValueError(f"`blur_samples` is {self.blur_samples!r}; use an odd positive integer (e.g. 5).")


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


def _surface(rng: np.random.Generator) -> dict:
    return {
        "color_a": rng.uniform(0.15, 1.0, size=3),
        "color_b": rng.uniform(0.0, 0.6, size=3),
        "pattern": rng.choice(["checker", "stripes", "plain"]),
        "frequency": rng.uniform(1.5, 5.0),
    }


def random_scene(rng: np.random.Generator, num_objects: int | None = None) -> dict:
    """A random scene description: a floor, maybe a back wall, and spheres and boxes standing near the origin."""
    if num_objects is None:
        num_objects = int(rng.integers(2, 6))
    objects = [
        {"kind": "plane", "label": "floor", "point": np.zeros(3), "normal": np.array([0.0, 1.0, 0.0])},
    ]
    if rng.random() < 0.7:
        wall_point = np.array([0.0, 0.0, -3.0 - rng.random()])
        objects.append({"kind": "plane", "label": "wall", "point": wall_point, "normal": np.array([0.0, 0.0, 1.0])})
    for _ in range(num_objects):
        center = np.array([rng.uniform(-1.8, 1.8), 0.0, rng.uniform(-1.8, 1.2)])
        if rng.random() < 0.5:
            radius = rng.uniform(0.3, 0.8)
            center[1] = radius if rng.random() < 0.7 else radius + rng.uniform(0.2, 1.0)
            objects.append({"kind": "sphere", "label": "sphere", "center": center, "radius": radius})
        else:
            half = rng.uniform(0.2, 0.6, size=3)
            center[1] = rng.uniform(0.3, 1.2)
            objects.append({"kind": "box", "label": "box", "center": center, "half": half, "rotation": _rotation(rng)})
    for obj in objects:
        obj.update(_surface(rng))
    light = np.array([rng.uniform(-1, 1), rng.uniform(0.6, 1.5), rng.uniform(0.2, 1.0)])
    sky = rng.uniform(0.5, 1.0, size=3)
    return {"objects": objects, "light": light / np.linalg.norm(light), "sky": sky}


def flat_lit(scene: dict) -> dict:
    """`scene` with plain (untextured) surfaces under nearly ambient light; the geometry is unchanged."""
    objects = [{**obj, "pattern": "plain"} for obj in scene["objects"]]
    return {**scene, "objects": objects, "ambient": _FLAT_AMBIENT}


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
    elif obj.get("moving"):
        points = points - obj["center"]  # the pattern travels with a moving object
    f = obj["frequency"]
    if obj["pattern"] == "checker":
        weight = (np.floor(points * f).sum(axis=1) % 2)[:, None]
    elif obj["pattern"] == "stripes":
        weight = (0.5 + 0.5 * np.sin(points[:, 0] * f * 3.0 + points[:, 2] * f))[:, None]
    else:
        weight = np.zeros((len(points), 1))
    return obj["color_a"] * (1.0 - weight) + obj["color_b"] * weight


def _cast(scene: dict, pose: np.ndarray, intrinsics, height: int, width: int) -> dict:
    """Ray-cast one instant: float colour `(H, W, 3)` before exposure and quantisation, and the exact geometry."""
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
    ambient = scene.get("ambient", _AMBIENT)
    shade = ambient + (1.0 - ambient) * np.clip(best_normal @ scene["light"], 0.0, 1.0)
    static = np.ones(len(dirs), dtype=bool)
    for index, obj in enumerate(scene["objects"]):
        sel = best_obj == index
        if sel.any():
            color[sel] = _texture(obj, points[sel]) * shade[sel, None]
            if obj.get("moving"):
                static[sel] = False

    cam_normal = best_normal @ rotation  # world -> camera: R^T n, row-vector form
    cam_normal = np.where(
        valid[:, None], cam_normal / np.maximum(np.linalg.norm(cam_normal, axis=1, keepdims=True), 1e-12), 0.0
    )
    depth = np.where(valid & static, best_t * -cam_dirs[:, 2], 0.0)
    return {
        "color": color.reshape(height, width, 3),
        "normal": cam_normal.astype(np.float32).reshape(height, width, 3),
        "depth": depth.astype(np.float32).reshape(height, width),
        "mask": valid.reshape(height, width),
        "object_index": best_obj.astype(np.int16).reshape(height, width),
    }


def _quantize(color: np.ndarray) -> np.ndarray:
    return np.round(np.clip(color, 0.0, 1.0) * 255.0).astype(np.uint8)


def render_frame(scene: dict, pose: np.ndarray, intrinsics, height: int, width: int) -> dict:
    """Ray-cast one frame. Returns `rgb` uint8 (H, W, 3), `normal` float32 (H, W, 3) camera-space unit normals
    facing the camera (zeros where invalid), `depth` float32 (H, W) z-depth (0 where invalid, and on moving
    objects), `mask` bool (H, W), and `object_index` int16 (H, W): the index in `scene["objects"]` (-1: sky)."""
    frame = _cast(scene, pose, intrinsics, height, width)
    frame["rgb"] = _quantize(frame.pop("color"))
    return frame


class OrbitPath:
    """A camera orbiting the scene centre with a slowly changing height and distance, at any time `s` (frames sit
    at `linspace(0, 1, F)`; motion blur renders between them)."""

    def __init__(self, rng: np.random.Generator):
        self.start = rng.uniform(-0.6, 0.6)
        self.sweep = rng.uniform(-0.8, 0.8)
        self.radius0, self.radius1 = rng.uniform(4.0, 6.0, size=2)
        self.height0, self.height1 = rng.uniform(1.0, 3.0, size=2)
        self.target = np.array([rng.uniform(-0.5, 0.5), rng.uniform(0.2, 0.8), rng.uniform(-0.8, 0.0)])

    def eye(self, s: float) -> np.ndarray:
        angle = self.start + self.sweep * s
        radius = self.radius0 + (self.radius1 - self.radius0) * s
        return np.array(
            [radius * np.sin(angle), self.height0 + (self.height1 - self.height0) * s, radius * np.cos(angle)]
        )

    def pose(self, s: float) -> np.ndarray:
        """Camera-to-world 4x4 pose at time `s`."""
        return look_at(self.eye(s), self.target)


def camera_path(rng: np.random.Generator, num_frames: int) -> np.ndarray:
    """`[F, 4, 4]` camera-to-world poses orbiting the scene centre, with a slowly changing height and distance."""
    path = OrbitPath(rng)
    return np.stack([path.pose(s) for s in np.linspace(0.0, 1.0, num_frames)])


class MovingOccluder:
    """A sphere crossing the view on a straight line between the camera and the scene during the clip."""

    def __init__(self, rng: np.random.Generator, path: OrbitPath, fov_degrees: float):
        middle = path.pose(0.5)
        eye, right, up = middle[:3, 3], middle[:3, 0], middle[:3, 1]
        distance = rng.uniform(0.25, 0.55) * np.linalg.norm(path.target - eye)
        half_view = distance * np.tan(np.radians(fov_degrees) / 2.0)  # half the visible width at that distance
        angle = rng.uniform(0.0, 2.0 * np.pi)
        direction = np.cos(angle) * right + np.sin(angle) * up
        self.middle = eye + distance * (path.target - eye) / np.linalg.norm(path.target - eye)
        self.middle = self.middle + rng.uniform(-0.3, 0.3) * half_view * (np.sin(angle) * right - np.cos(angle) * up)
        self.velocity = direction * rng.uniform(1.5, 3.0) * half_view  # crosses the view within the clip
        self.phase = rng.uniform(-0.25, 0.25)
        self.radius = rng.uniform(0.1, 0.25) * half_view
        self.surface = _surface(rng)

    def at(self, s: float) -> dict:
        """The occluder as a scene object at time `s`."""
        center = self.middle + (s - 0.5 + self.phase) * self.velocity
        sphere = {"kind": "sphere", "center": center, "radius": self.radius}
        return {**sphere, "label": "occluder", "moving": True, **self.surface}


def _labels(objects: list[dict], object_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel `OBJECT_KINDS` and `MATERIALS` indices (uint8) from an `object_index` map."""
    kinds = np.array([OBJECT_KINDS.index(obj["label"]) for obj in objects] + [0], dtype=np.uint8)
    materials = np.array([MATERIALS.index(obj["pattern"]) for obj in objects] + [0], dtype=np.uint8)
    return kinds[object_index], materials[object_index]  # index -1 (sky) takes the appended 0


def render_clip(
    folder: str | os.PathLike | None,
    num_frames: int = 16,
    height: int = 128,
    width: int = 128,
    seed: int = 0,
    fov_degrees: float | None = None,
    fps: float = 7.0,
    normal_format: str = "png",
    nuisances: Nuisances | None = None,
) -> dict:
    """Render one random clip; write it to `folder` in the clip format unless `folder` is None.

    The scene and the camera depend on `seed` only; `nuisances` (default: none) changes what the frames show, and
    moving occluders add geometry, but the same seed keeps the same scene and camera.

    Returns the arrays (`rgb`, `normal`, `depth`, `mask`, and the labels `kind` and `material`: uint8 `(F, H, W)`
    indices into `OBJECT_KINDS` and `MATERIALS`, not written to disk) and `meta` (fps, axis convention,
    intrinsics, poses).
    """
    for name, value in (("num_frames", num_frames), ("height", height), ("width", width)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` is {value!r}; it must be a positive integer.")
    nuisances = Nuisances() if nuisances is None else nuisances
    rng = np.random.default_rng(seed)
    scene = random_scene(rng)
    if fov_degrees is None:
        fov_degrees = float(rng.uniform(45.0, 70.0))
    fx = fy = 0.5 * width / np.tan(np.radians(fov_degrees) / 2.0)
    intrinsics = [float(fx), float(fy), width / 2.0, height / 2.0]
    path = OrbitPath(rng)
    streams = {name: np.random.default_rng([seed, stream]) for name, stream in _STREAMS.items()}

    if streams["flat_light"].random() < nuisances.flat_light:
        scene = flat_lit(scene)
    occluders = [MovingOccluder(streams["occluders"], path, fov_degrees) for _ in range(nuisances.occluders)]

    def scene_at(s: float) -> dict:
        return {**scene, "objects": scene["objects"] + [occluder.at(s) for occluder in occluders]}

    def color_at(s: float) -> np.ndarray:
        return _cast(scene_at(s), path.pose(s), intrinsics, height, width)["color"]

    times = np.linspace(0.0, 1.0, num_frames)
    frame_interval = 1.0 / (num_frames - 1) if num_frames > 1 else 1.0 / 15.0
    frames = []
    for s in times:
        instant = scene_at(s)
        frame = _cast(instant, path.pose(s), intrinsics, height, width)
        frame["kind"], frame["material"] = _labels(instant["objects"], frame.pop("object_index"))
        color = frame.pop("color")
        shutter = streams["motion_blur"].uniform(0.0, nuisances.motion_blur) if nuisances.motion_blur > 0 else 0.0
        if shutter > 0 and nuisances.blur_samples > 1:
            offsets = np.linspace(-0.5, 0.5, nuisances.blur_samples) * shutter * frame_interval
            # The sharp instant (offset 0) is already rendered; the others are the camera and occluders in motion.
            shots = [color if o == 0 else color_at(s + o) for o in offsets]
            color = np.mean(shots, axis=0)
        if nuisances.flicker > 0:
            color = color * streams["flicker"].uniform(1.0 - nuisances.flicker, 1.0 + nuisances.flicker)
        if nuisances.noise_std > 0:
            sigma = streams["noise"].uniform(0.0, nuisances.noise_std)
            color = color + streams["noise"].normal(0.0, sigma, color.shape)
        frame["rgb"] = _quantize(color)
        frames.append(frame)
    clip = {key: np.stack([f[key] for f in frames]) for key in ("rgb", "normal", "depth", "mask", "kind", "material")}
    poses = np.stack([path.pose(s) for s in times])
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
    root: str | os.PathLike,
    num_clips: int,
    frames: int = 16,
    height: int = 128,
    width: int = 128,
    seed: int = 0,
    nuisances: Nuisances | None = None,
) -> list[str]:
    """Render `num_clips` clips (with `nuisances`, default none) into `root/clip_00000`, ... and return their
    folders."""
    if not isinstance(num_clips, int) or num_clips < 1:
        raise ValueError(f"`num_clips` is {num_clips!r}; it must be a positive integer.")
    folders = []
    for index in range(num_clips):
        folder = os.path.join(os.fspath(root), f"clip_{index:05d}")
        render_clip(
            folder, num_frames=frames, height=height, width=width, seed=seed * 100003 + index, nuisances=nuisances
        )
        folders.append(folder)
    return folders
