"""The one error hierarchy of Basira.

Every refusal a user can meet is a :class:`BasiraError` subclass with a stable ``code``: the CLI
prints ``error[code]: message`` and exits non-zero, the API answers ``{"code", "message",
"detail"}`` with the class's HTTP status. Codes are part of the public contract (documented in
``docs/errors.md``); never rename one, add a new class instead.

The service's own refusals (requests, identity, tenants, jobs, the review UI) live with it, in
:mod:`serving.errors`, as subclasses of these classes.
"""

from __future__ import annotations

from typing import Any, ClassVar


class BasiraError(Exception):
    """Base of every error a user can be shown.

    ``message`` is one sentence a hospital IT person understands; ``detail`` holds
    machine-readable context (file name, tag, expected and found values) and never patient data.
    """

    code: ClassVar[str] = "basira.error"
    http_status: ClassVar[int] = 422
    #: True when the input is at fault (CLI exit code 3); False for our own failures (exit 1).
    bad_input: ClassVar[bool] = True

    def __init__(self, message: str, **detail: Any) -> None:
        super().__init__(message)
        self.message = message
        self.detail: dict[str, Any] = detail

    def to_dict(self) -> dict[str, Any]:
        """The ``{code, message, detail}`` body used by the API and ``--json`` outputs."""
        return {"code": self.code, "message": self.message, "detail": self.detail}

    def __str__(self) -> str:
        return self.message


# --- single files -------------------------------------------------------------------------------


class DicomFileError(BasiraError):
    """A file that cannot be used as a DICOM image."""

    code = "dicom.invalid"


class EmptyFileError(DicomFileError):
    """The file has no bytes at all (often an interrupted copy)."""

    code = "dicom.empty_file"


class NotDicomError(DicomFileError):
    """The file is not DICOM Part 10 (no 'DICM' preamble and no parsable dataset)."""

    code = "dicom.not_dicom"
    http_status = 415


class TruncatedFileError(DicomFileError):
    """The file ends before the data it declares: re-send the complete file."""

    code = "dicom.truncated"


class AbsurdLengthError(DicomFileError):
    """An element declares a length no real file has; refused before any memory is allocated."""

    code = "dicom.absurd_length"


class PixelDataLengthError(DicomFileError):
    """Pixel Data holds fewer bytes than Rows x Columns x Frames x BitsAllocated require."""

    code = "dicom.pixel_data_short"


class MissingAttributeError(DicomFileError):
    """A Type 1 attribute needed to place or scale the image is absent or empty."""

    code = "dicom.missing_attribute"


class InvalidAttributeError(DicomFileError):
    """An attribute holds a value its VR does not allow (e.g. letters in an integer)."""

    code = "dicom.invalid_attribute"


class MissingTransferSyntaxError(DicomFileError):
    """The file meta has no Transfer Syntax UID, so pixel bytes cannot be interpreted."""

    code = "dicom.missing_transfer_syntax"


class UnsupportedTransferSyntaxError(DicomFileError):
    """No installed decoder handles this transfer syntax."""

    code = "dicom.unsupported_transfer_syntax"
    http_status = 415


class UndecodablePixelDataError(DicomFileError):
    """The compressed pixel stream is corrupt: the decoder refused it."""

    code = "dicom.undecodable_pixel_data"


class NotAnImageError(DicomFileError):
    """A valid DICOM object that holds no image (SR, SEG, RT, DICOMDIR, waveform, ...)."""

    code = "dicom.not_an_image"


class NotCTError(DicomFileError):
    """An image that is not CT (another modality, or a capture that only claims to be CT)."""

    code = "dicom.not_ct"


class ColourImageError(DicomFileError):
    """A colour (RGB/palette/YBR) image: CT values cannot be recovered from it."""

    code = "dicom.colour_image"


class NotHounsfieldError(DicomFileError):
    """A derived map (perfusion, iodine, ...) whose values are not Hounsfield units."""

    code = "dicom.not_hounsfield"


# --- series -------------------------------------------------------------------------------------


class SeriesError(BasiraError):
    """A series whose slices cannot be stacked into one trustworthy volume."""

    code = "series.invalid"


class InconsistentGeometryError(SeriesError):
    """Slices disagree on orientation, matrix size or pixel spacing."""

    code = "series.inconsistent_geometry"


class NonUniformSpacingError(SeriesError):
    """The distance between consecutive slices varies more than the tolerance."""

    code = "series.non_uniform_spacing"


class MissingSlicesError(SeriesError):
    """Gaps along the slice normal show that slices were lost in transfer."""

    code = "series.missing_slices"


class DuplicateSlicesError(SeriesError):
    """Two instances share a SOP Instance UID or an image position."""

    code = "series.duplicate_slices"


class GantryTiltError(SeriesError):
    """The slice stack is sheared (gantry tilt): positions do not follow the slice normal."""

    code = "series.gantry_tilt"


class TooFewSlicesError(SeriesError):
    """Not enough slices to cover the anatomy."""

    code = "series.too_few_slices"


class SeriesTooSmallError(SeriesError):
    """The series spans less than one voxel of the model's grid along an axis (a matrix of a
    few pixels, or a single thin slice): the model cannot be shown it."""

    code = "series.too_small"


class VolumeTooLargeError(SeriesError):
    """The series would need more memory than the configured limit."""

    code = "series.too_large"
    http_status = 413


class LocalizerError(SeriesError):
    """A scout/localizer image, not a diagnostic series."""

    code = "series.localizer"


class NotOriginalError(SeriesError):
    """A derived or secondary series (reformat, MIP, ...), not the scanner's original images."""

    code = "series.not_original"


class NotAxialError(SeriesError):
    """The slices are not axial within the allowed obliquity."""

    code = "series.not_axial"


class SliceThicknessError(SeriesError):
    """The slice thickness is outside the range Basira reads."""

    code = "series.slice_thickness_out_of_range"


class MixedSeriesError(SeriesError):
    """Instances given as one series belong to several studies or series."""

    code = "series.mixed"


# --- inputs and archives ------------------------------------------------------------------------


class InputError(BasiraError):
    """The input as a whole cannot be used."""

    code = "input.invalid"


class InputNotFoundError(InputError):
    """A path the user named does not exist."""

    code = "input.not_found"


class NoDicomFoundError(InputError):
    """Nothing in the input was readable DICOM."""

    code = "input.no_dicom"


class OutOfIntendedUseError(InputError):
    """The series is outside the model's intended use (its card): it gets no score. The
    specific reason codes below say which condition failed; see ``docs/predict.md``."""

    code = "input.out_of_intended_use"


class IntendedModalityError(OutOfIntendedUseError):
    """The series is not of the modality the model was made for (CT)."""

    code = "intended_use.modality"


class IntendedBodyPartError(OutOfIntendedUseError):
    """Body Part Examined names another region than the model's (chest)."""

    code = "intended_use.body_part"


class IntendedSliceThicknessError(OutOfIntendedUseError):
    """The slice thickness is outside the range the model was validated on."""

    code = "intended_use.slice_thickness"


class IntendedSliceCountError(OutOfIntendedUseError):
    """Fewer slices than the model's intended use requires."""

    code = "intended_use.too_few_slices"


class IntendedCoverageError(OutOfIntendedUseError):
    """The scan is too short along the body axis to cover a chest."""

    code = "intended_use.chest_coverage"


class ImplausibleHounsfieldError(OutOfIntendedUseError):
    """The values do not look like a CT in Hounsfield units (no air, no soft tissue, or values
    no scanner produces): often a missing or wrong rescale."""

    code = "intended_use.hu_implausible"


class ArchiveError(InputError):
    """A zip archive that is corrupt or unsafe."""

    code = "archive.invalid"


class UnsafeArchivePathError(ArchiveError):
    """A member's path is absolute or climbs out of the archive ('..')."""

    code = "archive.unsafe_path"


class ArchiveTooLargeError(ArchiveError):
    """The archive expands past the configured total size."""

    code = "archive.too_large"
    http_status = 413


class ArchiveTooManyFilesError(ArchiveError):
    """The archive holds more members than the configured limit."""

    code = "archive.too_many_files"
    http_status = 413


class CorruptArchiveError(ArchiveError):
    """The zip container itself cannot be read."""

    code = "archive.corrupt"


# --- datasets -----------------------------------------------------------------------------------


class DatasetError(BasiraError):
    """A dataset (a public layout, a manifest's case files) that cannot be used as given."""

    code = "dataset.invalid"


class InvalidLayoutError(DatasetError):
    """A source folder does not follow the layout it was imported as (missing index, files)."""

    code = "dataset.invalid_layout"


class UnreadableImageError(DatasetError):
    """A NIfTI or MetaImage file that its reader refuses (corrupt, truncated, not 3-D)."""

    code = "dataset.unreadable_image"


class LabelMismatchError(DatasetError):
    """A label whose grid or frame of reference does not line up with its image."""

    code = "dataset.label_mismatch"


class PrepareFailedError(DatasetError):
    """Some cases of a manifest could not be prepared; the others were cached."""

    code = "dataset.prepare_failed"


class EmptySplitError(DatasetError):
    """The prepared data has no case in a split the job needs (training needs train and val)."""

    code = "dataset.empty_split"


class PreprocessMismatchError(DatasetError):
    """The cache was prepared with other preprocessing than the model bundle declares."""

    code = "dataset.preprocess_mismatch"


# --- training -----------------------------------------------------------------------------------


class TrainingError(BasiraError):
    """A training run that cannot start or continue as asked."""

    code = "training.invalid"


class CheckpointNotFoundError(TrainingError):
    """``--resume`` was given but the run folder holds no checkpoint."""

    code = "training.no_checkpoint"


class CheckpointMismatchError(TrainingError):
    """The checkpoint was written for another network or preprocessing than the bundle's."""

    code = "training.checkpoint_mismatch"


class DeviceUnavailableError(TrainingError):
    """The requested device (e.g. ``cuda``) is not available on this machine."""

    code = "training.device_unavailable"


# --- configuration ------------------------------------------------------------------------------


class ConfigError(BasiraError):
    """A configuration or parameter file that does not validate."""

    code = "config.invalid"


# --- evaluation and calibration -----------------------------------------------------------------


class EvaluationError(BasiraError):
    """Evaluation or calibration data from which the asked-for quantity cannot be computed."""

    code = "evaluation.invalid"


class MissingClassError(EvaluationError):
    """A fit needs both lesion-positive and lesion-negative examples (or at least one positive
    for a sensitivity target), and the data lacks one: evaluate on a split that has both."""

    code = "evaluation.missing_class"


# --- model registry -----------------------------------------------------------------------------


class RegistryError(BasiraError):
    """A model registry request that cannot be carried out as asked."""

    code = "registry.invalid"


class ModelVersionNotFoundError(RegistryError):
    """No registered model has this name and version: see `basira models list`."""

    code = "registry.model_not_found"
    http_status = 404


class IncompleteMetricsError(RegistryError):
    """A metrics.json lacks what registration and the promotion gate compare (CPM, study AUC,
    study ECE, the test data hash): write it with `basira evaluate`."""

    code = "registry.incomplete_metrics"


class TestDataMismatchError(RegistryError):
    """The candidate was evaluated on other test data than the production model: metrics on
    different data cannot be compared; evaluate both on the locked test split."""

    __test__ = False  # a pytest collection hint: not a test class
    code = "registry.test_data_mismatch"


class PromotionRefusedError(RegistryError):
    """The candidate is worse than the production model on the locked test split beyond the
    gate's tolerance (the message says by how much); `--force` overrides, and is recorded."""

    code = "registry.promotion_refused"


# --- model files --------------------------------------------------------------------------------


class ModelError(BasiraError):
    """A model release that cannot be used as it is on disk."""

    code = "model.invalid"
    http_status = 503
    bad_input = False


class ModelNotFoundError(ModelError):
    """The model release folder does not exist or holds no release (no bundle.yaml or
    SHA256SUMS): install the release or name it with ``--model``."""

    code = "model.not_found"


class ModelIntegrityError(ModelError):
    """A file of a model release is missing or does not match its SHA-256 (a corrupt copy or
    an edit after release): the model is not served. Re-copy the release folder."""

    code = "model.checksum_mismatch"


class ModelMismatchError(ModelError):
    """The ONNX model was exported for another preprocessing contract than the bundle's (or
    carries no Basira metadata), so it would see inputs it was not trained on: re-export it
    from this bundle with `basira export`."""

    code = "model.preprocess_mismatch"


class ModelUnreadableError(ModelError):
    """ONNX Runtime cannot load the model file (not ONNX, truncated, or an operator this
    runtime lacks): re-copy or re-export it."""

    code = "model.unreadable"


# --- export -------------------------------------------------------------------------------------


class ExportError(BasiraError):
    """An ONNX export that cannot produce a model fit to serve."""

    code = "export.invalid"
    bad_input = False


class ExportParityError(ExportError):
    """ONNX Runtime's output differs from torch's on the same input by more than the stated
    tolerance, so the ONNX file is not written: report it with the export's detail."""

    code = "export.parity_failed"


# --- outputs ------------------------------------------------------------------------------------


class OutputError(BasiraError):
    """A result object (DICOM SEG, SR, key image, FHIR) that cannot be released as written."""

    code = "output.invalid"
    http_status = 500
    bad_input = False


class OutputGeometryError(OutputError):
    """A written result object, read back, does not line up with its source series (a frame on
    the wrong slice, a mask that differs, a point off its finding, a wrong reference): it is
    not released. Report it with the detail; the source series itself is not at fault."""

    code = "output.geometry_mismatch"


class FindingNotRepresentableError(OutputError):
    """A finding that no output can show as it is (it covers no voxel of the source series'
    grid, or a measurement is not a finite number) is left out of every output, the result JSON
    included, and named in the result's ``withheld`` list with this code. The rest of the study
    is reported as usual."""

    code = "output.finding_not_representable"


# --- prediction ---------------------------------------------------------------------------------


class PredictionFailedError(BasiraError):
    """A study's analysis stopped on an unexpected error of ours (not of its input): the
    study is recorded as ``failed`` with this code and the batch goes on. Report it with the
    message; rerun with ``--verbose`` for the traceback."""

    code = "predict.failed"
    http_status = 500
    bad_input = False


# --- lookups ------------------------------------------------------------------------------------


class NotFoundError(BasiraError):
    """The thing asked for does not exist for this tenant (another tenant's is never shown)."""

    code = "resource.not_found"
    http_status = 404


class SliceOutOfRangeError(NotFoundError):
    """The viewer asked for a slice index outside the series."""

    code = "viewer.slice_out_of_range"


def all_error_classes() -> list[type[BasiraError]]:
    """Every error class defined so far, for documentation and the every-code-is-tested check.

    The service's classes are among them once :mod:`serving.errors` is imported (this library
    never imports the service).
    """
    found: list[type[BasiraError]] = []
    pending: list[type[BasiraError]] = [BasiraError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return sorted(found, key=lambda c: c.code)
