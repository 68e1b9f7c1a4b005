"""Named groups of MediaPipe face-mesh landmark indices (the 478-point topology).

"Right" and "left" are the person's own sides: the right eye is on the image's left.
"""

from __future__ import annotations

UPPER_LIP_OUTER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
LOWER_LIP_OUTER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
UPPER_LIP_INNER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LOWER_LIP_INNER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
MOUTH_CORNERS = (61, 291)
INNER_CORNERS = (78, 308)
LIP_TOP, LIP_BOTTOM = 13, 14  # inner lip midpoints

JAW = (172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397, 288)
CHIN = 152
FACE_SIDES = (234, 93, 132, 58, 454, 323, 361, 288)
FOREHEAD = (10, 109, 67, 103, 338, 297, 332)
NOSE = (1, 2, 4, 6, 98, 327, 168, 197)
CHEEKS = (50, 280, 205, 425, 187, 411)

RIGHT_EYE_UPPER = (246, 161, 160, 159, 158, 157, 173)
RIGHT_EYE_LOWER = (33, 7, 163, 144, 145, 153, 154, 155, 133)
LEFT_EYE_UPPER = (466, 388, 387, 386, 385, 384, 398)
LEFT_EYE_LOWER = (263, 249, 390, 373, 374, 380, 381, 382, 362)
RIGHT_EYE_CORNERS = (33, 133)
LEFT_EYE_CORNERS = (263, 362)

RIGHT_BROW = (70, 63, 105, 66, 107, 46, 53, 52, 65, 55)
LEFT_BROW = (300, 293, 334, 296, 336, 276, 283, 282, 295, 285)
RIGHT_BROW_INNER = (107, 66, 55, 65)
LEFT_BROW_INNER = (336, 296, 285, 295)

RIGHT_IRIS = (468, 469, 470, 471, 472)
LEFT_IRIS = (473, 474, 475, 476, 477)

CONTROL_POINTS = tuple(
    dict.fromkeys(
        UPPER_LIP_OUTER
        + LOWER_LIP_OUTER
        + UPPER_LIP_INNER
        + LOWER_LIP_INNER
        + JAW
        + FACE_SIDES
        + FOREHEAD
        + NOSE
        + CHEEKS
        + RIGHT_EYE_UPPER
        + RIGHT_EYE_LOWER
        + LEFT_EYE_UPPER
        + LEFT_EYE_LOWER
        + RIGHT_BROW
        + LEFT_BROW
        + RIGHT_IRIS
        + LEFT_IRIS
    )
)
"""The landmarks that steer the warp (order kept, duplicates removed)."""
