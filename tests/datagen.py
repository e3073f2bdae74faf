"""Write small synthetic CXR DICOM files with pydicom (test fixtures generated at test time,
never committed binaries).  ``write_dicom`` makes a valid CR object; ``write_corrupt_dicom`` a
file with a DICOM preamble and a truncated pixel element."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless, generate_uid

CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
COMPRESSIONS = {"rle": RLELossless, "j2k": JPEG2000Lossless}


def phantom_pixels(width: int = 96, height: int = 80, bits: int = 12, seed: int = 0) -> np.ndarray:
    """A uint16 "chest": dark lungs (two ellipses) in a brighter body, a bright spine column.

    Values use ``bits`` bits; the top-left 8x8 corner is background (0) and the spine the max.
    """
    yy, xx = np.mgrid[0:height, 0:width]
    top = 2**bits - 1
    img = np.full((height, width), 0.55 * top)
    for cx in (0.3, 0.7):
        lung = ((xx / width - cx) / 0.15) ** 2 + ((yy / height - 0.5) / 0.3) ** 2 < 1
        img[lung] = 0.2 * top
    img[:, int(0.47 * width):int(0.53 * width)] = top
    img += np.random.default_rng(seed).normal(0, 0.01 * top, img.shape)
    img[:8, :8] = 0
    return np.clip(np.rint(img), 0, top).astype(np.uint16)


def write_dicom(path: str | Path, pixels: np.ndarray, *, photometric: str = "MONOCHROME2", bits_stored: int = 12,
                window: tuple[float, float] | None = None, rescale: tuple[float, float] | None = None,
                compress: str = "", pixel_spacing: Sequence[float] = (0.139, 0.139), view: str = "PA",
                patient_id: str = "P0001") -> Path:
    """Write ``pixels`` (2-D uint8 or uint16) as a CR DICOM at ``path`` and return the path.

    ``window`` = (WindowCenter, WindowWidth); ``rescale`` = (RescaleSlope, RescaleIntercept);
    ``compress`` = ``"rle"`` (pydicom's own RLE Lossless encoder) or ``"j2k"`` (JPEG 2000
    Lossless through pylibjpeg-openjpeg).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CR_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = CR_IMAGE_STORAGE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = patient_id
    ds.Modality = "CR"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = view
    ds.PixelSpacing = [f"{v:g}" for v in pixel_spacing]
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 8 if pixels.dtype == np.uint8 else 16
    ds.BitsStored = 8 if pixels.dtype == np.uint8 else bits_stored
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = f"{window[0]:g}", f"{window[1]:g}"
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = f"{rescale[0]:g}", f"{rescale[1]:g}"
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    if compress:
        ds.compress(COMPRESSIONS[compress], np.ascontiguousarray(pixels))
    ds.save_as(path, enforce_file_format=True)
    return path


def write_corrupt_dicom(path: str | Path, pixels: np.ndarray | None = None) -> Path:
    """A DICOM whose pixel data is cut short (a truncated download): the header parses, the
    pixels do not."""
    path = write_dicom(path, phantom_pixels() if pixels is None else pixels)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - len(data) // 3])
    return path


# ----------------------------------------------------------------------------------------------
# Dataset folders (the real layouts, generated: ids, headers and box conventions as shipped)

VINDR_CLASSES = ("Cardiomegaly", "Pleural effusion", "Nodule/Mass", "Aortic enlargement")


def vindr_dicom_folder(root: str | Path, n_train: int = 12, n_test: int = 4, *, corrupt: int = 1,
                       size: tuple[int, int] = (96, 80), seed: int = 0) -> Path:
    """A PhysioNet-layout VinDr-CXR folder: ``{train,test}/<32-hex id>.dicom`` (12-bit CR, a mix of
    MONOCHROME1/2, one RLE-compressed) and ``annotations/annotations_{train,test}.csv`` with boxes
    in DICOM pixels, three readers per train image.  No image_resolutions JSON: the DICOM headers
    give the size.  The first ``corrupt`` train files are truncated.  Returns ``root``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    w, h = size
    header = "image_id,rad_id,class_name,x_min,y_min,x_max,y_max\n"
    for split, n in (("train", n_train), ("test", n_test)):
        lines = [header]
        for i in range(n):
            iid = f"{split[:2]}{seed:02d}{i:04d}".ljust(32, "a")
            px = phantom_pixels(w, h, seed=seed * 1000 + i + (0 if split == "train" else 500))
            path = root / split / f"{iid}.dicom"
            if split == "train" and i < corrupt:
                write_corrupt_dicom(path, px)
            else:
                write_dicom(path, px, photometric="MONOCHROME1" if i % 2 else "MONOCHROME2",
                            compress="rle" if i == 2 else "", patient_id="", view="PA")
            readers = ("R1", "R2", "R3") if split == "train" else ("",)
            if i % 4 == 3:
                lines += [f"{iid},{r},No finding,,,,\n" for r in readers]
                continue
            cls = VINDR_CLASSES[i % len(VINDR_CLASSES)]
            x0, y0 = int(rng.integers(5, w // 2)), int(rng.integers(5, h // 2))
            for r in readers:
                j = int(rng.integers(0, 3))
                lines.append(f"{iid},{r},{cls},{x0 + j},{y0 + j},{x0 + 20 + j},{y0 + 18 + j}\n")
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"annotations_{split}.csv").write_text("".join(lines))
    return root


def vindr_kaggle_folder(root: str | Path, n_train: int = 40, n_test: int = 3, *, size: tuple[int, int] = (64, 56),
                        seed: int = 0) -> Path:
    """The Kaggle VinBigData download as shipped: ``train.csv`` (``image_id, class_name, class_id,
    rad_id, x_min, y_min, x_max, y_max``; ``No finding`` is class 14 with empty boxes),
    ``train/<id>.dicom`` and unlabelled ``test/<id>.dicom``; no test annotations and no
    resolutions JSON.  Train image ``i`` has DICOM PatientID ``VBD<i // 2>`` (pairs of images of
    one patient), except every third (``i % 3 == 2``), whose header has none.  Returns ``root``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    w, h = size
    class_ids = {name: i for i, name in enumerate(VINDR_CLASSES)}
    lines = ["image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max\n"]
    for i in range(n_train):
        iid = f"kg{seed:02d}{i:04d}".ljust(32, "b")
        pid = "" if i % 3 == 2 else f"VBD{i // 2:04d}"
        write_dicom(root / "train" / f"{iid}.dicom", phantom_pixels(w, h, seed=seed * 1000 + i), patient_id=pid)
        if i % 4 == 3:
            lines += [f"{iid},No finding,14,{r},,,,\n" for r in ("R8", "R9", "R10")]
            continue
        cls = VINDR_CLASSES[i % len(VINDR_CLASSES)]
        x0, y0 = int(rng.integers(4, w // 2)), int(rng.integers(4, h // 2))
        for r in ("R8", "R9", "R10"):
            j = int(rng.integers(0, 3))
            lines.append(f"{iid},{cls},{class_ids[cls]},{r},{x0 + j},{y0 + j},{x0 + 18 + j},{y0 + 16 + j}\n")
    for i in range(n_test):
        write_dicom(root / "test" / f"{f'kt{i:04d}'.ljust(32, 'b')}.dicom", phantom_pixels(w, h, seed=9000 + i))
    (root / "train.csv").write_text("".join(lines))
    return root


def nih_folder(root: str | Path, n_patients: int = 16, images_per_patient: int = 2, *,
               size: tuple[int, int] = (64, 64)) -> Path:
    """An NIH ChestX-ray14 folder: ``Data_Entry_2017_v2020.csv`` (split bracketed headers),
    ``BBox_List_2017.csv`` (xywh on the 1024² image), PNGs in ``images/``.  Every image of an
    even patient has a Cardiomegaly or Effusion box."""
    from PIL import Image

    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    entry = ["Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
             "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]\n"]
    boxes = ["Image Index,Finding Label,Bbox [x,y,w,h],,,\n"]
    for p in range(1, n_patients + 1):
        for k in range(images_per_patient):
            name = f"{p:08d}_{k:03d}.png"
            label = ("Cardiomegaly" if p % 4 == 0 else "Effusion") if p % 2 == 0 else "No Finding"
            entry.append(f"{name},{label},{k},{p},50,M,PA,1024,1024,0.143,0.143\n")
            if label != "No Finding":
                x = 300.0 if label == "Cardiomegaly" else 100.0
                boxes.append(f"{name},{label},{x},400.0,300.0,250.0\n")
            Image.fromarray(phantom_pixels(*size, bits=8, seed=p * 10 + k).astype(np.uint8)).save(root / "images" / name)
    (root / "Data_Entry_2017_v2020.csv").write_text("".join(entry))
    (root / "BBox_List_2017.csv").write_text("".join(boxes))
    return root


def chexpert_plus_folder(root: str | Path, n_patients: int = 16, *, size: tuple[int, int] = (64, 64),
                         first_patient: int = 1) -> Path:
    """A CheXpert Plus folder: ``df_chexpert_plus_240401.csv`` (pre-split report sections, split
    train/valid) and PNGs at ``train/patientNNNNN/study1/view1_frontal.png`` (the CSV says .jpg,
    as the PNG release does)."""
    from PIL import Image

    root = Path(root)
    cols = ("path_to_image,path_to_dcm,frontal_lateral,ap_pa,deid_patient_id,patient_report_date_order,report,"
            "section_findings,section_impression,section_end_of_impression,split\n")
    lines = [cols]
    findings = ("The heart is enlarged. No pleural effusion.", "Small left pleural effusion. Heart size is normal.",
                "Lungs are clear. No pneumothorax.", "Right lower lobe opacity, possibly pneumonia.")
    for p in range(first_patient, first_patient + n_patients):
        rel = f"train/patient{p:05d}/study1/view1_frontal.jpg"
        split = "valid" if p % 8 == 0 else "train"
        text = findings[p % len(findings)]
        lines.append(f"{rel},,Frontal,PA,PID{p:05d},1,\"{text}\",\"{text}\",\"Impression {p}.\",,{split}\n")
        png = root / rel.replace(".jpg", ".png")
        png.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(phantom_pixels(*size, bits=8, seed=7000 + p).astype(np.uint8)).save(png)
    (root / "df_chexpert_plus_240401.csv").write_text("".join(lines))
    return root
