"""The published layouts the rehearsal writes: per collection, which files and metadata.

One planner per collection (:func:`plan_nih`, :func:`plan_cohen`, :func:`plan_figure1`,
:func:`plan_kermany`) returns the images to render (:class:`Job`, paths under the published
folder names) and the metadata text, with the published columns, counts and quirks; the
driver (:mod:`cxrlib.data.rehearse`) renders the phantoms and writes everything.

==================  ====================================  ===========================================
collection          folder (published name)               layout and metadata written
==================  ====================================  ===========================================
``nih``             ``nih-chestxray14/``                  ``images_001..012/images/<Image Index>``
                                                          (official archive boundaries: 4,999 images
                                                          in the first, 10,000 in the next ten);
                                                          ``Data_Entry_2017_v2020.csv`` = the real rows
                                                          (Wang et al. CVPR 2017) of the images written;
                                                          ``BBox_List_2017.csv`` = the real expert boxes
                                                          of those images (header kept verbatim)
``covid-chestxray`` ``covid-chestxray-dataset/``          ``metadata.csv`` (published columns, Cohen et al.
                                                          arXiv:2006.11988, state of 2020-06) + ``images/``;
                                                          finding/view/modality mix of that state, with the
                                                          rows adapters must skip (CT, lateral, ``todo``)
``figure1``         ``figure1-covid-chestxray-dataset/``  latin-1 ``metadata.csv`` + ``images/<patientid>.jpg``
``kermany``         ``chest_xray/``                       ``train|test|val/NORMAL|PNEUMONIA`` with
                                                          ``personN_bacteria_M.jpeg``, ``personN_virus_M.jpeg``,
                                                          ``IM-NNNN-NNNN.jpeg``, ``NORMAL2-IM-NNNN-NNNN.jpeg``
                                                          (Kermany et al. Cell 2018; published folder sizes)
==================  ====================================  ===========================================

NIH rows come from the official ``Data_Entry_2017_v2020.csv(.gz)`` (``--labels``): findings,
patients, follow-ups and views are the published ones. Below ``scale=1`` whole patients are drawn
(seeded), so follow-ups stay together. Metadata fields are copied verbatim: ``OriginalImage``
still says 1024-3000 px although the phantoms are ``size`` px, and the boxes keep their 1024 px
frame (the adapter rescales them); the phantom lesions are *not* drawn inside those boxes.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from cxrlib.io import write_csv, write_text

FOLDERS = {"nih": "nih-chestxray14", "covid-chestxray": "covid-chestxray-dataset",
           "figure1": "figure1-covid-chestxray-dataset", "kermany": "chest_xray"}
NIH_ARCHIVE_FIRST, NIH_ARCHIVE_SIZE = 4999, 10000  # images_001 holds 4,999 images, the next 10,000 each
NIH_COLUMNS = ("Image Index", "Finding Labels", "Follow-up #", "Patient ID", "View Position")
MIN_GROUP = 6  # below scale 1, each small collection / Kermany folder keeps at least this many images

# Cohen collection, state of 2020-06 (751 rows: 667 X-ray, 84 CT; 380 patients)
COHEN_COLUMNS = ("patientid,offset,sex,age,finding,survival,intubated,intubation_present,went_icu,in_icu,"
                 "needed_supplemental_O2,extubated,temperature,pO2_saturation,leukocyte_count,"
                 "neutrophil_count,lymphocyte_count,view,modality,date,location,folder,filename,doi,url,"
                 "license,clinical_notes,other_notes,").split(",")  # published header ends with ','
COHEN_ROWS, COHEN_CT, COHEN_PATIENTS = 751, 84, 380
COHEN_FINDINGS = {"COVID-19": 526, "todo": 78, "No Finding": 23, "Pneumocystis": 17, "Streptococcus": 17,
                  "SARS": 16, "Pneumonia": 14, "COVID-19, ARDS": 12, "Klebsiella": 8, "Legionella": 6,
                  "Mycoplasma Bacterial Pneumonia": 8, "Varicella": 5, "E.Coli": 4, "Influenza": 2}
COHEN_VIEWS = {"PA": 314, "AP Supine": 137, "AP": 119, "L": 58, "": 35, "?": 4}
VIRAL = {"SARS", "Varicella", "Influenza"}
# Figure 1 (as published 2020-05-08): 55 images
FIGURE1_COLUMNS = ["patientid", "offset", "sex", "age", "finding", "survival", "temperature", "pO2 saturation",
                   "view", "modality", "artifacts/distortion", "notes"]
FIGURE1_FINDINGS = {"COVID-19": 35, "": 15, "No finding": 3, "Pneumonia": 2}
# Kermany ChestXRay2017: published folder sizes; pneumonia ~ 2/3 bacterial
KERMANY_FOLDERS = {("train", "NORMAL"): 1341, ("train", "PNEUMONIA"): 3875, ("test", "NORMAL"): 234,
                   ("test", "PNEUMONIA"): 390, ("val", "NORMAL"): 8, ("val", "PNEUMONIA"): 8}


@dataclass(frozen=True)
class Job:
    """One image to render: where, whose, what is in it."""

    rel: str  # path relative to ROOT
    collection: str
    patient: str
    findings: tuple[str, ...]  # phantom finding names (empty = normal)
    view: str | None  # 'PA' / 'AP' or None (drawn)
    subtype: str = ""  # 'bacterial' / 'viral' for Pneumonia


def _code(*parts) -> int:
    return zlib.crc32("|".join(map(str, parts)).encode("utf-8"))


def _count(full: int, scale: float, floor: int = 0) -> int:
    if scale >= 1:
        return full
    return min(full, max(int(math.ceil(full * scale)), floor))


def _draw(rng: np.random.Generator, weights: dict, n: int) -> list:
    keys = list(weights)
    p = np.array([weights[k] for k in keys], float)
    return [keys[i] for i in rng.choice(len(keys), size=n, p=p / p.sum())]


# ----------------------------------------------------------------------------- NIH
def read_nih_labels(path: str | os.PathLike):
    """The official Data_Entry table (``.csv`` or ``.csv.gz``) as strings; errors name the file."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: NIH label file not found (Data_Entry_2017_v2020.csv[.gz], from "
                                "https://nihcc.app.box.com/v/ChestXray-NIHCC); pass it with --labels")
    df = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    missing = [c for c in NIH_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: line 1: missing column(s) {missing}; found {list(df.columns)}")
    return df


def plan_nih(labels, scale: float, seed: int) -> tuple[list[Job], "object"]:
    """Jobs and Data_Entry rows of the NIH part: whole patients drawn until ``scale`` of the images."""
    df = labels
    pos = np.arange(len(df))
    archive = np.where(pos < NIH_ARCHIVE_FIRST, 1, 2 + (pos - NIH_ARCHIVE_FIRST) // NIH_ARCHIVE_SIZE)  # [N]
    if scale < 1:
        per_patient = df.groupby("Patient ID", sort=True).size()  # [P]
        order = np.random.default_rng([seed, _code("nih-patients")]).permutation(len(per_patient))
        cum = np.cumsum(per_patient.to_numpy()[order])
        k = int(np.searchsorted(cum, max(1, round(scale * len(df))))) + 1
        chosen = set(per_patient.index[order[:k]])
        keep = df["Patient ID"].isin(chosen).to_numpy()
        df, archive = df[keep], archive[keep]
    jobs = []
    for name, findings, pid, view, arc in zip(df["Image Index"], df["Finding Labels"], df["Patient ID"],
                                              df["View Position"], archive):
        f = tuple(x for x in findings.split("|") if x and x != "No Finding")
        subtype = "viral" if _code(seed, "subtype", pid) % 2 else "bacterial"
        jobs.append(Job(f"{FOLDERS['nih']}/images_{arc:03d}/images/{name.strip()}", "nih", pid, f,
                        view if view in ("PA", "AP") else None, subtype))
    return jobs, df


def write_nih_metadata(folder: Path, rows, labels_path: Path) -> None:
    """``Data_Entry_2017_v2020.csv`` of the rows written, and the official boxes of those images
    (``BBox_List_2017.csv[.gz]`` beside ``labels_path``, header verbatim) when that file exists."""

    write_csv(folder / "Data_Entry_2017_v2020.csv", rows, index=False)
    box_path = labels_path.with_name("BBox_List_2017.csv.gz")
    if not box_path.is_file():
        box_path = labels_path.with_name("BBox_List_2017.csv")
    if not box_path.is_file():
        return
    present = set(rows["Image Index"].str.strip())
    opener = gzip.open if box_path.suffix == ".gz" else open
    with opener(box_path, "rt", encoding="utf-8", newline="") as f:
        lines = f.read().splitlines()
    kept = [lines[0]] + [ln for ln in lines[1:] if ln.split(",", 1)[0].strip() in present]
    write_text(folder / "BBox_List_2017.csv", "\n".join(kept) + "\n")


# ----------------------------------------------------------------------------- COVID collections
def _csv_text(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def _cohen_phantom(finding: str, rng) -> tuple[tuple[str, ...], str]:
    if finding.startswith("COVID-19"):
        return ("COVID-19",), ""
    if finding in ("No Finding",):
        return (), ""
    if finding == "todo":
        return (("COVID-19",), "") if rng.random() < 0.7 else (("Pneumonia",), "bacterial")
    return ("Pneumonia",), "viral" if finding in VIRAL else "bacterial"


def plan_cohen(scale: float, seed: int) -> tuple[list[Job], str]:
    """Jobs and metadata.csv text of the Cohen collection (X-ray and CT rows, all with images)."""
    rng = np.random.default_rng([seed, _code("covid-chestxray")])
    n = _count(COHEN_ROWS, scale, MIN_GROUP)
    n_ct = int(round(n * COHEN_CT / COHEN_ROWS))
    n_pat = max(1, int(round(n * COHEN_PATIENTS / COHEN_ROWS)))
    findings = _draw(rng, COHEN_FINDINGS, n)
    views = _draw(rng, COHEN_VIEWS, n)
    patients = np.sort(rng.integers(1, n_pat + 1, size=n))  # several images per patient
    rows, jobs = [], []
    for i in range(n):
        ct = i >= n - n_ct
        pid, finding = str(patients[i]), findings[i]
        view = "Axial" if ct else views[i]
        ext = "png" if rng.random() < 0.25 else "jpeg"
        filename = f"rehearsal-{pid}-{i:04d}.{ext}"
        sex, age = ("F", "M")[int(rng.integers(2))], str(int(rng.integers(20, 90)))
        rows.append([pid, str(int(rng.integers(0, 20))), sex, age, finding, "", "", "", "", "", "", "", "", "",
                     "", "", "", view, "CT" if ct else "X-ray", "March 2, 2020", "rehearsal (phantom)",
                     "images", filename, "", "", "CC BY 4.0", "phantom radiograph written by cxr data rehearse",
                     "", ""])
        f, sub = _cohen_phantom(finding, rng)
        jobs.append(Job(f"{FOLDERS['covid-chestxray']}/images/{filename}", "covid-chestxray", pid, f,
                        view if view in ("PA", "AP") else None, sub))
    return jobs, _csv_text(COHEN_COLUMNS, rows)


def plan_figure1(scale: float, seed: int) -> tuple[list[Job], str]:
    """Jobs and (latin-1) metadata.csv text of the Figure 1 collection; image stem == patientid."""
    rng = np.random.default_rng([seed, _code("figure1")])
    n = _count(sum(FIGURE1_FINDINGS.values()), scale, MIN_GROUP)
    rows, jobs = [], []
    for i, finding in enumerate(_draw(rng, FIGURE1_FINDINGS, n)):
        pid = f"COVID-{i + 1:05d}"
        view = ("AP erect", "PA", "")[int(rng.integers(3))]
        rows.append([pid, "", ("F", "M")[int(rng.integers(2))], f"{int(rng.integers(3, 9)) * 10}+", finding, "",
                     "38.2°C", "", view, "X-ray", "", "patient transféré; phantom written by cxr data rehearse"])
        f = ("COVID-19",) if finding in ("COVID-19", "") else (("Pneumonia",) if finding == "Pneumonia" else ())
        jobs.append(Job(f"{FOLDERS['figure1']}/images/{pid}.jpg", "figure1", pid, f, None, "bacterial"))
    return jobs, _csv_text(FIGURE1_COLUMNS, rows)


def plan_kermany(scale: float, seed: int) -> list[Job]:
    """Jobs of the Kermany layout: names carry patient and (pneumonia) bacterial/viral."""
    rng = np.random.default_rng([seed, _code("kermany")])
    jobs, person, study = [], 0, 0
    for (split, cls), full in KERMANY_FOLDERS.items():
        n, i = _count(full, scale, MIN_GROUP), 0
        while i < n:  # one patient (1-3 images) at a time, never across folders
            k = min(n - i, int(rng.integers(1, 4)))
            if cls == "PNEUMONIA":
                person += 1
                kind = "bacteria" if rng.random() < 0.65 else "virus"
                names = [f"person{person}_{kind}_{m}.jpeg" for m in range(i + 1, i + k + 1)]
                f, sub, pid = ("Pneumonia",), "bacterial" if kind == "bacteria" else "viral", f"person{person}"
            else:
                study += 1
                prefix = "NORMAL2-IM" if rng.random() < 0.5 else "IM"
                pid = f"{prefix}-{study:04d}"
                names = [f"{pid}-{m:04d}.jpeg" for m in range(1, k + 1)]
                f, sub = (), ""
            jobs += [Job(f"{FOLDERS['kermany']}/{split}/{cls}/{nm}", "kermany", pid, f, None, sub) for nm in names]
            i += k
    return jobs
