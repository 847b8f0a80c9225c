"""The service's errors: refused requests, identity, tenants, jobs and results, and the review
UI.

They extend the one hierarchy of :mod:`pipelines.errors` (every class is a
:class:`~pipelines.errors.BasiraError` with a stable ``code`` and an HTTP status), so the API
answers them like the library's own, and their codes are part of the same public contract
(``docs/errors.md``): never rename one, add a new class instead.
"""

from __future__ import annotations

from pipelines.errors import BasiraError, NotFoundError

__all__ = [
    "AETitleInUseError",
    "AuthError",
    "CsrfError",
    "DuplicateInstanceError",
    "EmptyUploadError",
    "FeedbackExportError",
    "FeedbackFindingNotFoundError",
    "ForbiddenError",
    "InternalServiceError",
    "InvalidAETitleError",
    "InvalidCredentialsError",
    "InvalidParametersError",
    "JobNotFoundError",
    "KeyFileInsideOutputError",
    "LoginFailedError",
    "MalformedMultipartError",
    "MethodNotAllowedError",
    "MissingCredentialsError",
    "MultipleStudiesError",
    "NoSignedReviewsError",
    "NothingAcceptedError",
    "RateLimitedError",
    "ReasonRequiredError",
    "RequestTooLargeError",
    "ResultNotReadyError",
    "ResultObjectNotFoundError",
    "ReviewError",
    "ReviewLockedError",
    "ReviewNotSignedError",
    "ServiceRequestError",
    "ServiceUnavailableError",
    "SessionRequiredError",
    "StorageFullError",
    "StudyMismatchError",
    "StudyNotFoundError",
    "TenantError",
    "TenantExistsError",
    "TenantNotFoundError",
    "TooManyPartsError",
    "UnknownAETitleError",
    "UnsupportedMediaTypeError",
    "UploadRefusedError",
    "UserError",
    "UserExistsError",
    "WorklistDateRangeError",
]


# --- requests, identity, tenants, jobs ----------------------------------------------------------


class ServiceRequestError(BasiraError):
    """A request the service cannot take as sent."""

    code = "request.invalid"
    http_status = 400


class RequestTooLargeError(ServiceRequestError):
    """The request body is larger than the configured limit; send the study in smaller parts
    (STOW-RS accepts a study over several requests)."""

    code = "request.too_large"
    http_status = 413


class UnsupportedMediaTypeError(ServiceRequestError):
    """The request's Content-Type is not one this endpoint reads."""

    code = "request.unsupported_media_type"
    http_status = 415


class MalformedMultipartError(ServiceRequestError):
    """The multipart body is cut short or its boundaries are broken (often an interrupted
    upload): nothing of it was kept; send it again."""

    code = "request.malformed_multipart"


class InvalidParametersError(ServiceRequestError):
    """A path or query parameter, or a JSON body, does not match the API's schema
    (``detail.errors`` lists each problem)."""

    code = "request.invalid_parameters"
    http_status = 422


class MethodNotAllowedError(ServiceRequestError):
    """The path exists but not with this HTTP method."""

    code = "request.method_not_allowed"
    http_status = 405


class TooManyPartsError(ServiceRequestError):
    """The request holds more files than the configured limit."""

    code = "request.too_many_parts"
    http_status = 413


class RateLimitedError(ServiceRequestError):
    """Too many requests with this key; wait the number of seconds in Retry-After."""

    code = "request.rate_limited"
    http_status = 429


class UploadRefusedError(ServiceRequestError):
    """An upload that cannot become one study."""

    code = "upload.invalid"
    http_status = 422


class EmptyUploadError(UploadRefusedError):
    """The upload holds no file."""

    code = "upload.empty"


class NothingAcceptedError(UploadRefusedError):
    """Every file of the upload was refused; ``detail.rejected_files`` says why for each."""

    code = "upload.nothing_accepted"


class MultipleStudiesError(UploadRefusedError):
    """The upload holds instances of more than one study: send one study per upload (nothing
    of it was kept)."""

    code = "upload.multiple_studies"


class StudyMismatchError(UploadRefusedError):
    """An instance sent to ``/dicomweb/studies/{study}`` belongs to another study."""

    code = "upload.study_mismatch"


class DuplicateInstanceError(BasiraError):
    """An instance with this SOP Instance UID was already stored with different content; the
    first one is kept. Give a corrected object a new SOP Instance UID."""

    code = "dicom.duplicate_instance"
    http_status = 409


class AuthError(BasiraError):
    """The request is not authenticated or not allowed."""

    code = "auth.invalid"
    http_status = 401


class MissingCredentialsError(AuthError):
    """No ``Authorization: Bearer <key>`` header was sent."""

    code = "auth.missing_key"


class InvalidCredentialsError(AuthError):
    """The API key is unknown or revoked."""

    code = "auth.invalid_key"


class UnknownAETitleError(AuthError):
    """A DICOM association's calling AE title belongs to no tenant, so the association is
    rejected (A-ASSOCIATE-RJ, calling AE title not recognised): register the sending PACS with
    ``basira tenants create NAME --ae-title AE``."""

    code = "auth.unknown_ae_title"


class ForbiddenError(AuthError):
    """The key is valid but its role may not do this (the audit log needs an admin key)."""

    code = "auth.forbidden"
    http_status = 403


class StudyNotFoundError(NotFoundError):
    """No study with this Study Instance UID was received from this tenant."""

    code = "study.not_found"


class JobNotFoundError(NotFoundError):
    """No job with this id belongs to this tenant."""

    code = "job.not_found"


class ResultNotReadyError(NotFoundError):
    """The study is known but its analysis has not ended; poll its job (``detail.job_id``)."""

    code = "result.not_ready"


class ResultObjectNotFoundError(NotFoundError):
    """The analysis ended without this object (no findings means no SEG or SR; a study that
    was not analysable has only its JSON result)."""

    code = "result.no_object"


class TenantError(BasiraError):
    """A tenant (hospital) cannot be created or found as asked."""

    code = "tenant.invalid"


class TenantExistsError(TenantError):
    """A tenant with this name already exists."""

    code = "tenant.exists"
    http_status = 409


class TenantNotFoundError(TenantError):
    """No tenant has this name."""

    code = "tenant.not_found"
    http_status = 404


class InvalidAETitleError(TenantError):
    """An AE title is 1–16 characters of printable ASCII without backslash, not all spaces."""

    code = "tenant.invalid_ae_title"


class AETitleInUseError(TenantError):
    """Another tenant already sends with this AE title (it maps C-STORE to a tenant, so it must
    be unique)."""

    code = "tenant.ae_title_in_use"
    http_status = 409


class ServiceUnavailableError(BasiraError):
    """The service cannot take work right now (database or storage unavailable)."""

    code = "service.unavailable"
    http_status = 503
    bad_input = False


class InternalServiceError(BasiraError):
    """An unexpected error of the service; it was logged with ``detail.error_id``, which an
    operator can look up."""

    code = "service.internal"
    http_status = 500
    bad_input = False


class StorageFullError(ServiceUnavailableError):
    """The storage volume has less free space than the configured reserve; nothing was
    stored. Free space or move storage, then send again."""

    code = "storage.full"
    http_status = 507


# --- review UI ----------------------------------------------------------------------------------


class LoginFailedError(AuthError):
    """The user name or the password is wrong (which of the two is not said)."""

    code = "ui.login_failed"


class SessionRequiredError(AuthError):
    """The review UI needs a signed-in session: none was sent, or it ended (idle timeout,
    maximum age or logout). Sign in again."""

    code = "ui.session_required"


class CsrfError(ForbiddenError):
    """A state-changing UI request without the session's CSRF token (header
    ``X-CSRF-Token`` or form field ``csrf_token``); reload the page and try again."""

    code = "ui.csrf_failed"


class WorklistDateRangeError(BasiraError):
    """The worklist's study date range ends before it starts (``date_from`` after
    ``date_to``)."""

    code = "ui.invalid_date_range"


class UserError(BasiraError):
    """A review UI account cannot be created or changed as asked."""

    code = "user.invalid"


class UserExistsError(UserError):
    """The hospital already has a user with this name."""

    code = "user.exists"
    http_status = 409


class ReviewError(BasiraError):
    """A review action that cannot be recorded as sent."""

    code = "review.invalid"


class ReviewLockedError(ReviewError):
    """The review was signed off and is locked: nothing more can be recorded on it."""

    code = "review.locked"
    http_status = 409


class ReasonRequiredError(ReviewError):
    """Rejecting a finding needs a reason (it becomes a training label)."""

    code = "review.reason_required"


class ReviewNotSignedError(ReviewError):
    """Only a signed review can be exported as a DICOM SR."""

    code = "review.not_signed"
    http_status = 409


class FeedbackFindingNotFoundError(NotFoundError):
    """The feedback names a finding id the analysis did not report."""

    code = "review.finding_not_found"


class FeedbackExportError(BasiraError):
    """Signed reviews cannot be exported as a training dataset as asked."""

    code = "feedback.invalid"


class NoSignedReviewsError(FeedbackExportError):
    """No signed review matches the export's tenant and date: nothing to export."""

    code = "feedback.no_signed_reviews"


class KeyFileInsideOutputError(FeedbackExportError):
    """The re-identification key must be kept apart from the pseudonymised dataset: give a
    --key-file outside --out."""

    code = "feedback.key_inside_output"
