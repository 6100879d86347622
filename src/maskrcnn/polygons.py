"""Binary masks as polygons traced along pixel edges (COCO's polygon segmentation)."""

import numpy as np

# Walking directions around a pixel boundary, clockwise on screen (y points down):
# east, south, west, north. A right turn is +1, a left turn is +3 (mod 4).
_STEPS = np.array([[1, 0], [0, 1], [-1, 0], [0, -1]])


def mask_to_polygons(mask: np.ndarray) -> list[list[float]]:
    """mask (H, W) bool -> the outer boundary of each of its 8-connected regions.

    Each polygon is a flat [x1, y1, x2, y2, ...] list of at least 4 points running along
    pixel edges (pixel (x, y) covers [x, x + 1] x [y, y + 1]), so its area equals the
    region's pixel count and pycocotools rasterizes it back to the same pixels. Holes are
    filled: COCO polygons cannot express them. Largest polygon first.
    """
    mask = np.asarray(mask, dtype=bool)
    rows = np.flatnonzero(mask.any(axis=1))
    if len(rows) == 0:
        return []
    cols = np.flatnonzero(mask.any(axis=0))
    # Crop to the region and pad with background so every boundary edge lies inside the array.
    padded = np.pad(mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1], 1)
    starts, directions = _boundary_edges(padded)
    successors = _successors(starts, directions, padded.shape[1] + 1)
    # Only vertices where the walk turns are polygon corners.
    predecessors = np.empty_like(successors)
    predecessors[successors] = np.arange(len(successors))
    is_corner = directions[predecessors] != directions

    offset = np.array([cols[0] - 1, rows[0] - 1])
    polygons = []
    for loop in _cycles(successors):
        corners = starts[loop[is_corner[loop]]] + offset  # (K, 2) xy, in walking order
        x, y = corners[:, 0], corners[:, 1]
        area = 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))
        if area > 0:  # clockwise on screen: an outer boundary; holes run the other way
            polygons.append((area, corners.astype(np.float64).ravel().tolist()))
    polygons.sort(key=lambda item: -item[0])
    return [polygon for _, polygon in polygons]


def _boundary_edges(padded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every pixel edge between foreground and background, oriented with foreground on the right.

    padded: (H, W) bool with a background border. Returns start vertices (E, 2) xy at pixel
    corners and directions (E,) indexing _STEPS.
    """
    above = np.zeros_like(padded)
    above[1:] = padded[:-1]
    below = np.zeros_like(padded)
    below[:-1] = padded[1:]
    before = np.zeros_like(padded)
    before[:, 1:] = padded[:, :-1]
    after = np.zeros_like(padded)
    after[:, :-1] = padded[:, 1:]
    # (neighbour, direction, start corner relative to the pixel's top-left) for each side.
    sides = [(above, 0, (0, 0)), (after, 1, (1, 0)), (below, 2, (1, 1)), (before, 3, (0, 1))]
    starts, directions = [], []
    for neighbour, direction, (dx, dy) in sides:
        ys, xs = np.nonzero(padded & ~neighbour)
        starts.append(np.stack([xs + dx, ys + dy], axis=1))
        directions.append(np.full(len(xs), direction))
    return np.concatenate(starts), np.concatenate(directions)


def _successors(starts: np.ndarray, directions: np.ndarray, vertices_per_row: int) -> np.ndarray:
    """For each edge (E,), the index of the edge that continues the boundary from its end.

    Where two regions touch only at a corner the end vertex has two outgoing edges; turning
    left keeps them in one boundary (8-connected regions, as in OpenCV's findContours).
    """
    keys = (starts[:, 1] * vertices_per_row + starts[:, 0]) * 4 + directions
    order = np.argsort(keys)
    sorted_keys = keys[order]
    ends = starts + _STEPS[directions]
    end_vertex = ends[:, 1] * vertices_per_row + ends[:, 0]
    successors = np.full(len(starts), -1)
    for turn in (3, 0, 1):  # left, straight, right
        wanted = end_vertex * 4 + (directions + turn) % 4
        position = np.minimum(np.searchsorted(sorted_keys, wanted), len(keys) - 1)
        found = (sorted_keys[position] == wanted) & (successors < 0)
        successors[found] = order[position[found]]
    if (successors < 0).any():  # a pixel boundary is always closed: a bug here, not bad input
        raise RuntimeError(f"mask_to_polygons: {int((successors < 0).sum())} boundary edges lead nowhere")
    return successors


def _cycles(successors: np.ndarray) -> list[np.ndarray]:
    """Split a permutation (E,) into its cycles, each as edge indices in walking order.

    A Python walk, but over boundary edges only (about the perimeter), never over pixels.
    """
    following = successors.tolist()
    visited = [False] * len(following)
    cycles = []
    for start in range(len(following)):
        if visited[start]:
            continue
        cycle = []
        edge = start
        while not visited[edge]:
            visited[edge] = True
            cycle.append(edge)
            edge = following[edge]
        cycles.append(np.array(cycle))
    return cycles
