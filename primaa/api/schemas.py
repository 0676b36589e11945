"""Request and response schemas: they validate input and document the API in OpenAPI."""

from __future__ import annotations

from marshmallow import EXCLUDE, RAISE, Schema, fields, validate

from primaa.jobs.model import DeliveryStatus, JobStatus
from primaa.results.bbox import BBOX_PATTERN

STATUSES = [s.value for s in JobStatus]
#: Objects in one ``bbox`` answer by default, and at most.
RESULT_WINDOW_LIMIT = 20_000
MAX_RESULT_WINDOW_LIMIT = 500_000
HTTP_SCHEMES = {"http", "https"}


class ErrorSchema(Schema):
    code = fields.Integer(required=True, metadata={"description": "The HTTP status code."})
    error = fields.String(required=True, metadata={"description": "What went wrong, in words."})
    type = fields.String(required=True, metadata={"description": "Stable machine-readable kind."})
    details = fields.Dict(metadata={"description": "Per-field messages, when there are any."})
    request_id = fields.String()


_HTTP_URL = validate.URL(schemes=HTTP_SCHEMES, require_tld=False)


def _image_url(value: str) -> None:
    """An http(s) URL, or a ``file://`` URL whose path the job manager checks (roots, links)."""
    if value[:5].lower() == "file:":
        return
    _HTTP_URL(value)


class JobSubmissionSchema(Schema):
    """``POST /jobs`` as JSON (for uploads, the same fields as multipart form parts + ``image``)."""

    class Meta:
        unknown = RAISE

    image_url = fields.String(
        required=True,
        validate=[validate.Length(min=1, max=8192), _image_url],
        metadata={
            "format": "uri",
            "description": (
                "The image: an http(s) URL (fetched, streamed to disk), or a `file://` URL"
                " of a slide on shared storage (`file:///mnt/slides/case-1.svs`), read in"
                " place, allowed only under the server's `file_roots`"
                " (`PRIMAA_FILE_ROOTS`; none by default: every `file://` URL is then 422)."
                " A whole-slide image (SVS, NDPI, MRXS, pyramidal TIFF...) or a flat"
                " PNG, JPEG or TIFF."
            ),
        },
    )
    algorithm_name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    parameters = fields.Dict(
        keys=fields.String(),
        load_default=dict,
        metadata={"description": "Algorithm parameters; see GET /algorithms/{name}."},
    )
    callback_url = fields.Url(
        load_default=None,
        allow_none=True,
        schemes=HTTP_SCHEMES,
        require_tld=False,
        validate=validate.Length(min=1),
        metadata={"description": "Receives the result Feature (or the failure) by POST."},
    )
    callback_token = fields.String(
        load_default=None,
        allow_none=True,
        load_only=True,
        validate=validate.Length(max=4096),
        metadata={"description": "Sent back as `Authorization: Bearer <token>`; never shown."},
    )
    timeout = fields.Float(
        load_default=None,
        allow_none=True,
        validate=validate.Range(min=1),
        metadata={"description": "Time limit in seconds (bounded by the server maximum)."},
    )


class LegacySubmissionSchema(Schema):
    """The original ``POST /job-submission`` body; unknown fields are ignored as they were."""

    class Meta:
        unknown = EXCLUDE

    image_url = fields.Url(
        required=True, schemes=HTTP_SCHEMES, require_tld=False, validate=validate.Length(min=1)
    )
    algorithm_name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    callback_url = fields.Url(
        load_default=None,
        allow_none=True,
        schemes=HTTP_SCHEMES,
        require_tld=False,
        validate=validate.Length(min=1),
    )
    callback_token = fields.String(load_default=None, allow_none=True, load_only=True)
    parameters = fields.Dict(keys=fields.String(), load_default=dict)


class LegacyStatusSchema(Schema):
    code = fields.Integer(required=True)
    job_id = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf([*STATUSES, "NotFound"]))
    error = fields.String(allow_none=True)


class DeliveryAttemptSchema(Schema):
    at = fields.String(metadata={"description": "ISO 8601 time of the attempt."})
    status_code = fields.Integer(allow_none=True)
    error = fields.String(allow_none=True)
    duration = fields.Float()


class CallbackSchema(Schema):
    url = fields.String()
    delivery_id = fields.String(metadata={"description": "Same on every retry (webhook-id)."})
    state = fields.String(validate=validate.OneOf([s.value for s in DeliveryStatus]))
    next_attempt_at = fields.String(allow_none=True)
    attempts = fields.List(fields.Nested(DeliveryAttemptSchema))


class LevelSchema(Schema):
    width = fields.Integer()
    height = fields.Integer()
    downsample = fields.Float(metadata={"description": "Level-0 pixels per pixel of this level."})


class ImageInfoSchema(Schema):
    format = fields.String(
        metadata={
            "description": "OpenSlide's vendor name for slides (aperio, hamamatsu, mirax,"
            " generic-tiff...), or png, jpeg, tiff for flat images."
        }
    )
    kind = fields.String(
        validate=validate.OneOf(["slide", "flat"]),
        metadata={"description": "slide: read tile by tile; flat: decoded whole."},
    )
    width = fields.Integer(metadata={"description": "Level-0 width in pixels."})
    height = fields.Integer(metadata={"description": "Level-0 height in pixels."})
    mpp = fields.Float(
        allow_none=True,
        metadata={"description": "Micrometres per level-0 pixel; null when the file does not say."},
    )
    levels = fields.List(fields.Nested(LevelSchema), metadata={"description": "Finest first."})
    bytes = fields.Integer(metadata={"description": "Size of the file."})


class JobLinksSchema(Schema):
    self = fields.String()
    result = fields.String()
    cancel = fields.String()


class JobSchema(Schema):
    job_id = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(STATUSES))
    algorithm_name = fields.String(required=True)
    parameters = fields.Dict()
    image_url = fields.String(allow_none=True)
    image = fields.Nested(
        ImageInfoSchema,
        allow_none=True,
        metadata={"description": "What the image is, once a run opened it; null before."},
    )
    progress_percent = fields.Float(metadata={"description": "How far the job got, 0 to 100."})
    progress = fields.Float(
        metadata={"description": "Same as progress_percent; the name of earlier versions."}
    )
    attempts = fields.Integer()
    error = fields.String(allow_none=True)
    cancel_requested = fields.Boolean()
    timeout = fields.Float(allow_none=True)
    created_at = fields.String()
    updated_at = fields.String()
    started_at = fields.String(allow_none=True)
    finished_at = fields.String(allow_none=True)
    callback = fields.Nested(CallbackSchema, allow_none=True)
    links = fields.Nested(JobLinksSchema)


class JobPageSchema(Schema):
    jobs = fields.List(fields.Nested(JobSchema))
    next_cursor = fields.String(allow_none=True)


class JobListQuerySchema(Schema):
    class Meta:
        unknown = RAISE

    status = fields.String(validate=validate.OneOf(STATUSES))
    algorithm_name = fields.String()
    cursor = fields.String(
        metadata={"description": "`next_cursor` of the previous page; empty: the first page."}
    )
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=500))


class ResultQuerySchema(Schema):
    class Meta:
        unknown = RAISE

    format = fields.String(
        load_default="geojson",
        validate=validate.OneOf(["geojson", "qupath"]),
        metadata={
            "description": "`geojson`: one Feature; `qupath`: a FeatureCollection QuPath imports."
        },
    )
    bbox = fields.String(
        metadata={
            "description": (
                "`x0,y0,x1,y1` in level-0 pixels (two opposite corners): only the objects meeting"
                " this window (a point inside it, a polygon whose bounding box meets it), with"
                " `properties.view` giving their count and, past `limit`, a density grid."
                " With `format=qupath`, those objects for QuPath. A malformed bbox is 400."
            ),
            "example": "0,0,2048,2048",
            "pattern": BBOX_PATTERN,
        }
    )
    limit = fields.Integer(
        load_default=RESULT_WINDOW_LIMIT,
        validate=validate.Range(min=1, max=MAX_RESULT_WINDOW_LIMIT),
        metadata={
            "description": "With `bbox`: at most this many objects (an evenly spaced sample)."
        },
    )


class FeatureSchema(Schema):
    type = fields.String(required=True)
    geometry = fields.Dict(allow_none=True)
    properties = fields.Dict()
    features = fields.List(fields.Dict())


class AlgorithmSummarySchema(Schema):
    name = fields.String(required=True)
    version = fields.String()
    summary = fields.String()
    plugin = fields.String()
    cpu_bound = fields.Boolean()


class BrokenPluginSchema(Schema):
    name = fields.String()
    error = fields.String()


class AlgorithmListSchema(Schema):
    algorithms = fields.List(fields.Nested(AlgorithmSummarySchema))
    broken_plugins = fields.List(fields.Nested(BrokenPluginSchema))


class SlideSupportSchema(Schema):
    mpp = fields.Float(metadata={"description": "Resolution it works at, µm per pixel."})
    border_um = fields.Float(metadata={"description": "Context each tile needs, in µm."})
    tiled = fields.Boolean(
        metadata={"description": "Tiles across all workers (true) or the slide in one piece."}
    )


class AlgorithmDetailSchema(AlgorithmSummarySchema):
    description = fields.String()
    default_timeout = fields.Float(allow_none=True)
    parameters = fields.Dict(metadata={"description": "JSON Schema of the parameters."})
    slides = fields.Nested(
        SlideSupportSchema,
        allow_none=True,
        metadata={
            "description": "How it runs on whole-slide images; null: whole images only "
            "(a slide above the flat-image pixel limit is refused)."
        },
    )


class HealthSchema(Schema):
    status = fields.String(validate=validate.OneOf(["ok", "degraded", "unavailable", "draining"]))
    version = fields.String()
    algorithms = fields.List(fields.String())
    broken_plugins = fields.List(fields.Nested(BrokenPluginSchema))
    store = fields.String()
    workers = fields.Integer()
    #: ``ok``, or why tasks cannot start now (``executor = "dask"``: the scheduler is away).
    executor = fields.String()
