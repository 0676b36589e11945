"""A straightforward scikit-image nucleus detector, the yardstick for ours.

Hematoxylin by ``rgb2hed``, an Otsu threshold on it, the Euclidean distance
transform of the mask, and its local maxima. Bench-only: scikit-image is not a
runtime dependency of primaa.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import ndimage
from skimage.color import rgb2hed
from skimage.feature import peak_local_max
from skimage.filters import threshold_otsu

#: About a third of a 22 px nucleus: a window of 15 px suppresses a second peak
#: inside one nucleus without merging most touching pairs.
MIN_DISTANCE = 7
#: Distance-transform peaks lower than this are specks, not nuclei.
MIN_PEAK_DISTANCE = 2.0


def reference_detect(
    rgb: npt.NDArray[np.uint8], min_distance: int = MIN_DISTANCE
) -> npt.NDArray[np.float64]:
    """Nucleus centres as an ``(N, 2)`` array of ``[x, y]`` pixels."""
    hema = rgb2hed(rgb)[..., 0]
    mask = hema > threshold_otsu(hema)
    distance = ndimage.distance_transform_edt(mask)
    peaks = peak_local_max(
        distance,
        min_distance=min_distance,
        threshold_abs=MIN_PEAK_DISTANCE,
        exclude_border=False,
    )
    return peaks[:, ::-1].astype(np.float64)
