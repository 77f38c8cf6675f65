"""DICOM Segmentation (binary, highdicom) of one radiograph: one segment per structure the pipeline returned.

Each segment carries a SNOMED CT code from pydicom's code tables (`codes.SCT`), the model that made it
(name, version, sha256 as Algorithm Identification) and, for a demonstration model, a description that says
so. The SEG's UIDs are derived from the source instance and the models, so the SR of the same file and
options (`/dicom/sr`) references exactly the SEG `/dicom/seg` returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

import highdicom as hd
import numpy as np
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from service.dicom.analysis import ModelIdentity, RadiographAnalysis
from service.dicom.source import copied_from_source

try:
    SOFTWARE_VERSION = version("spine-xray")
except PackageNotFoundError:  # a source tree that is not installed
    SOFTWARE_VERSION = "0.0.0"
MANUFACTURER = "spine-xray"
MODEL_NAME = "spine-xray inference service"
SEG_SERIES_NUMBER = 9401
SR_SERIES_NUMBER = 9402


@dataclass(frozen=True)
class StructureCoding:
    property_type: Code  # Segmented Property Type (CID 7151 where the concept is there)
    shows: str  # what the mask covers, in words


# Codes looked up in pydicom's tables (pydicom.sr.codedict.codes.SCT), never typed in by hand. The tables have
# no generic "intervertebral disc" (only level-specific discs) and no vertebral-line concept: those masks are
# coded as the vertebral column (SCT 421060004 "Spine") and their description says what they are.
STRUCTURE_CODES: dict[str, StructureCoding] = {
    "Ap_Vertebra": StructureCoding(codes.SCT.Vertebra, "vertebral bodies on the AP view"),
    "Ap_Pedicle": StructureCoding(codes.SCT.PedicleOfVertebra, "vertebral pedicles on the AP view"),
    "Ap_Spinous_Process": StructureCoding(codes.SCT.SpinousProcessOfVertebra, "spinous processes on the AP view"),
    "Lat_Vertebra": StructureCoding(codes.SCT.Vertebra, "vertebral bodies on the lateral view"),
    "Lat_Spinous_Process": StructureCoding(codes.SCT.SpinousProcessOfVertebra, "spinous processes on the lateral view"),
    "Lat_Disk_Height": StructureCoding(codes.SCT.Spine, "intervertebral disc spaces on the lateral view"),
    "Lat_Anterior_Vertebral_Line": StructureCoding(codes.SCT.Spine, "anterior vertebral line on the lateral view"),
    "Lat_Posterior_Vertebral_Line": StructureCoding(codes.SCT.Spine, "posterior vertebral line on the lateral view"),
}
CATEGORY = codes.SCT.AnatomicalStructure  # CID 7150
REGION = codes.SCT.Spine


def structure_coding(structure: str) -> StructureCoding:
    """A structure the table does not list (a future model) is coded as the spine, described by its name."""
    return STRUCTURE_CODES.get(structure, StructureCoding(REGION, structure.replace("_", " ")))


@dataclass(frozen=True)
class SegIdentity:
    series_instance_uid: str
    sop_instance_uid: str


def seg_identity(analysis: RadiographAnalysis) -> SegIdentity:
    """UIDs that depend only on the source instance, the structures and the model files (same input, same SEG)."""
    models = [f"{m.name}:{m.version}:{m.sha256}" for s in analysis.masks for m in analysis.models[s]]
    series = generate_uid(entropy_srcs=["spine-xray SEG series", str(analysis.source.SeriesInstanceUID), *models])
    instance = generate_uid(entropy_srcs=["spine-xray SEG", analysis.sop_instance_uid, analysis.view, *models])
    return SegIdentity(series_instance_uid=series, sop_instance_uid=instance)


def algorithm_identification(models: list[ModelIdentity]) -> hd.AlgorithmIdentificationSequence:
    """The U-Net (name, version, sha256, validated) and, when one ran, the refinement model after it."""
    first, *refinements = models
    parameters = {"sha256": first.sha256, "validated": str(first.validated).lower()}
    for i, model in enumerate(refinements, start=1):
        parameters[f"refinement_{i}"] = f"{model.name} {model.version} sha256 {model.sha256}"
    return hd.AlgorithmIdentificationSequence(
        name=first.name,
        family=codes.cid7162.ArtificialIntelligence,
        version=first.version,
        source=MANUFACTURER,
        parameters=parameters,
    )


def segment_text(structure: str, models: list[ModelIdentity]) -> str:
    """Segment Description: what the mask shows, which model made it and, for demonstration weights, a warning."""
    model = models[0]
    text = f"{structure_coding(structure).shows}; model {model.name} {model.version}"
    if not model.validated:
        text += (
            ". DEMONSTRATION MODEL, NOT VALIDATED: trained on one study, for trying the software only, "
            f"not for clinical use ({model.notes or 'see GET /models'})"
        )
    return text[:1024]  # Segment Description is ST (1024 characters)


def build_segmentation(analysis: RadiographAnalysis) -> hd.seg.Segmentation:
    """One binary SEG instance of the source radiograph, one segment (one frame, even when empty) per structure."""
    source = analysis.source
    structures = list(analysis.masks)
    identity = seg_identity(analysis)
    descriptions = []
    for number, structure in enumerate(structures, start=1):
        coding = structure_coding(structure)
        description = hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=structure,
            segmented_property_category=CATEGORY,
            segmented_property_type=coding.property_type,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm_identification(analysis.models[structure]),
            tracking_uid=generate_uid(entropy_srcs=[identity.sop_instance_uid, structure]),
            tracking_id=f"{structure} of {analysis.view} image {analysis.sop_instance_uid}"[:64],
            anatomic_regions=[REGION],
        )
        description.SegmentDescription = segment_text(structure, analysis.models[structure])
        descriptions.append(description)
    rows, columns = int(source.Rows), int(source.Columns)
    pixels = np.stack([analysis.masks[s].astype(bool) for s in structures], axis=-1)[np.newaxis]  # (1, rows, cols, segments)
    if pixels.shape[1:3] != (rows, columns):
        raise ValueError(f"masks are {pixels.shape[1:3]}, the source is {rows}x{columns}")
    with copied_from_source("Segmentation"):
        seg = _segmentation(source, pixels, descriptions, identity, analysis.view)
    seg.SeriesDescription = "spine-xray segmentation"
    if "ImagePositionPatient" not in source:
        # A projection radiograph has no plane in patient space, so a frame of reference copied from it would make
        # Slice Thickness required in Pixel Measures (Type 1C), which a radiograph does not have. The SEG IOD makes
        # the Frame of Reference module optional when the Derivation Image group (here: the source) is present.
        for keyword in ("FrameOfReferenceUID", "PositionReferenceIndicator"):
            if keyword in seg:
                delattr(seg, keyword)
        add_viewer_geometry(seg, source)
    if "PatientOrientation" not in seg:
        # General Image module, Type 2C for a SEG of a projection image; empty when the source does not say.
        seg.PatientOrientation = source.get("PatientOrientation", "")
    return seg


# What cornerstone3D (and so OHIF) assumes for an image without Image Orientation (Patient): rows along +x, columns
# along +y. Its SEG loader lays a frame over the source only if the SEG states this same orientation.
VIEWER_DEFAULT_ORIENTATION = [1, 0, 0, 0, 1, 0]
# A projection has no slice thickness; highdicom reads a Pixel Measures item only with one. 1 mm is what viewers
# assume for a single image (cornerstone3D's default spacing), a nominal value, not a measured one.
NOMINAL_SLICE_THICKNESS_MM = 1.0


def add_viewer_geometry(seg: Dataset, source: Dataset) -> None:
    """Pixel Measures and Plane Orientation (Patient) in the shared functional groups of a projection film's SEG.

    highdicom writes neither for a source without a plane in patient space, and OHIF 3.13 cannot open such a SEG:
    its SEG viewport reads Pixel Measures from the shared functional groups (an empty item does not survive
    Orthanc's DICOMweb metadata), and @cornerstonejs/adapters needs the SEG's Image Orientation (Patient) to be the
    film's (or, for a film without one, the orientation it assumes for it) before it lays the frames over the film.
    Pixel Spacing is the film's own, else its Imager Pixel Spacing (at the detector); a film with neither gets
    nothing, there being no true value to write. Frames still map to the film by the Derivation Image references;
    no Frame of Reference is claimed. docs/annotation.md, "Reading the results in a PACS viewer", says why.
    """
    spacing = source.get("PixelSpacing") or source.get("ImagerPixelSpacing")
    if not spacing or len(spacing) != 2:
        return
    if "SharedFunctionalGroupsSequence" not in seg or not seg.SharedFunctionalGroupsSequence:
        seg.SharedFunctionalGroupsSequence = [Dataset()]
    shared = seg.SharedFunctionalGroupsSequence[0]
    # highdicom copies a film's Pixel Spacing here when the film has a frame of reference; it is completed, not doubled.
    measures = shared.PixelMeasuresSequence[0] if "PixelMeasuresSequence" in shared else Dataset()
    if "PixelSpacing" not in measures:
        measures.PixelSpacing = list(spacing)
    if "SliceThickness" not in measures:
        measures.SliceThickness = NOMINAL_SLICE_THICKNESS_MM
    shared.PixelMeasuresSequence = [measures]
    if "PlaneOrientationSequence" not in shared:
        orientation = Dataset()
        orientation.ImageOrientationPatient = list(source.get("ImageOrientationPatient") or VIEWER_DEFAULT_ORIENTATION)
        shared.PlaneOrientationSequence = [orientation]


def _segmentation(
    source: Dataset, pixels: np.ndarray, descriptions: list[hd.seg.SegmentDescription], identity: SegIdentity, view: str
) -> hd.seg.Segmentation:
    return hd.seg.Segmentation(
        source_images=[source],
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=identity.series_instance_uid,
        series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=identity.sop_instance_uid,
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=MODEL_NAME,
        software_versions=SOFTWARE_VERSION,
        device_serial_number=MANUFACTURER,
        content_description=f"spine-xray segmentation, {view} view",
        content_label="SPINE_XRAY",
        omit_empty_frames=False,  # frame n = segment n, so an SR can point at a segment even when it is empty
        transfer_syntax_uid=ExplicitVRLittleEndian,
    )


def seg_frames(seg: Dataset) -> dict[int, int]:
    """Segment number -> frame number, read from the SEG's functional groups (a SEG of one segment has its
    Segment Identification in the shared group, not per frame)."""
    shared = seg.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in seg else Dataset()
    frames = {}
    for frame, item in enumerate(seg.PerFrameFunctionalGroupsSequence, start=1):
        identification = item.get("SegmentIdentificationSequence") or shared.SegmentIdentificationSequence
        frames[int(identification[0].ReferencedSegmentNumber)] = frame
    return frames
