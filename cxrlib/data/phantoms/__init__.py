"""Synthetic chest radiograph phantoms: the embedded default dataset of cxrlib.

No real chest X-ray can be shipped with the project, so ``make demo`` runs on phantom
radiographs that cxrlib draws itself, procedurally and deterministically (same seed ->
byte-identical files). They are written as PNG files plus a manifest in exactly the format of
the real data (:mod:`cxrlib.data.manifest`), so the same code path runs on both.

What is drawn
-------------
*Anatomy* (frontal view, patient's right on the image left): body outline and soft tissue,
neck and shoulders, two lung fields (dark) with branching vascular markings from the hila,
trachea, mediastinum with aortic knob, heart shadow shifted to the patient's left, domes of the
diaphragm (right higher) with a gastric bubble, vertebral column, clavicles, posterior and
anterior ribs, scapulae, humeral heads and breast shadows (women). Patient-level parameters
(body habitus, thorax width, heart size, rib spacing, vessel tree) are drawn once per patient,
so follow-up images of one patient share them; each image varies inspiration, pose (rotation,
shift, zoom), projection (``PA`` or ``AP``: the AP view magnifies the heart and raises the
clavicles), exposure, contrast, gamma, blur and noise.

*Findings*, each with its own radiological appearance (lesion size and contrast vary, so some
cases are subtle):

==================  ==========================================================================
Cardiomegaly        enlarged heart shadow, cardiothoracic ratio 0.53-0.66 (normal 0.38-0.45;
                    the ``ctr`` column is as projected, i.e. x1.12 in AP views)
Effusion            fluid in the costophrenic recess with a meniscus rising laterally
Pneumothorax        collapsed lung with a visible pleural line, lucent rim without markings
Nodule / Mass       small (r ~ 3-6 % of the chest) / large lobulated round opacities
Consolidation       dense segmental opacity with air bronchograms
Pneumonia           as the target-domain pneumonia (bacterial lobar or viral interstitial)
Infiltration        ill-defined hazy patches
Atelectasis         plate-like linear opacity at a base, elevated hemidiaphragm (volume loss)
Edema               bilateral perihilar "bat-wing" haze, Kerley B lines, cephalisation
Emphysema           hyperlucent enlarged lungs, low flat diaphragm, pruned vessels, bullae
Fibrosis            reticular network in the upper zones
Pleural_Thickening  smooth soft-tissue band along the lateral chest wall or an apical cap
Hernia              retrocardiac round opacity with an air-fluid level (hiatal hernia)
==================  ==========================================================================

Target-domain classes: ``covid19`` = bilateral, peripheral, lower-zone ground-glass
opacities (COVID-19 never appears in the source domain); ``pneumonia`` = bacterial lobar
consolidation with air bronchograms or viral patchy perihilar interstitial pattern (50/50,
recorded in the ``subtype`` column; ``viral_pneumonia`` of task ``paper_b_viral`` is viral
only); ``other_disease`` (paper A) = one or two of the 13 non-pneumonia NIH findings, named in
``findings``; ``normal`` = nothing. The source-domain ``Pneumonia`` finding is drawn by the
same code as the target pneumonia, so keeping its output neuron in transfer makes sense.

*Domains*: the source task (``source`` / ``nih14``) imitates NIH ChestX-ray14 (chest small
in the frame with abdomen and shoulders, moderate contrast, little noise); the target tasks
imitate the COVID collections (tighter crops, more AP views, wider spread of contrast and gamma,
more noise, some images with black collimation borders). Domain extension is a real transfer.

Ground truth and metadata
-------------------------
* ``mask_path``: 0/255 PNG, the union of the lesion regions (all zero for ``No Finding`` /
  ``normal``). Diffuse findings use their region: Cardiomegaly -> heart shadow, Emphysema ->
  both lung fields, Edema -> perihilar haze, Pneumothorax -> the air rim.
* ``patient_id``: several images per patient (``images_per_patient`` range); all images of
  one patient have the same class / findings, lesions move and change size slightly.
* ``shortcut`` / ``text_box``: a burnt-in text marker (``shortcut_text``, default
  ``PORTABLE``, rendered with PIL's default font near the top-right corner). For each image,
  with probability ``shortcut_strength`` = p the marker is drawn **iff** the image belongs to
  ``shortcut_class`` (default ``covid19``; ``Pneumonia`` in the source domain), otherwise it is
  drawn at random with probability ``shortcut_base_rate`` b. With the default b = prevalence
  pi of the shortcut class, the marker rate stays pi and the phi (Matthews) correlation
  between marker and class equals p exactly in expectation: P(marker | class) = p + (1-p) pi,
  P(marker | other) = (1-p) pi. p = 0 gives an uncorrelated marker, p = 1 a perfect shortcut.
  The decisions use their own random stream, so changing p changes nothing but the markers.
  ``text_box`` is ``x,y,w,h`` in pixels of the stored image ('' when not drawn).
* ``lr_box``: laterality markers ("R" on the image left or "L" on the image right, as
  technologists place them), drawn on ``lr_marker_rate`` of the images independent of the
  class; recorded separately from the shortcut (``x,y,w,h`` or '').
* ``ctr`` (cardiothoracic ratio as projected, i.e. including AP magnification), ``subtype``
  (``bacterial``/``viral`` for pneumonia), ``view`` (``PA``/``AP``), ``age``, ``sex``.
* ``phantoms.json`` beside the manifest records the generation parameters.

Learnability (lesion size and contrast vary, some cases are subtle; the other_disease class
mixes 13 findings) and generation speed are measured by ``benchmarks/bench_phantoms.py``.
Package layout: :mod:`~cxrlib.data.phantoms.anatomy` (patient/view samplers, the normal chest),
:mod:`~cxrlib.data.phantoms.findings` (one appearance per finding),
:mod:`~cxrlib.data.phantoms.render` (detector model, one image),
:mod:`~cxrlib.data.phantoms.markers` (burnt-in text) and :mod:`~cxrlib.data.phantoms.dataset`
(patients, classes, files, manifest).
"""

from cxrlib.data.phantoms.anatomy import PatientAnatomy, ViewParams, sample_patient, sample_view
from cxrlib.data.phantoms.dataset import PHANTOM_VERSION, contact_sheet, generate_phantoms, shortcut_twin
from cxrlib.data.phantoms.findings import COVID_FINDING, NO_FINDING, OTHER_FINDINGS
from cxrlib.data.phantoms.markers import SHORTCUT_TEXT, burn_markers, draw_text_marker
from cxrlib.data.phantoms.render import PhantomImage, render_phantom

__all__ = [
    "PHANTOM_VERSION", "SHORTCUT_TEXT", "NO_FINDING", "COVID_FINDING", "OTHER_FINDINGS",
    "PatientAnatomy", "ViewParams", "sample_patient", "sample_view", "render_phantom", "PhantomImage",
    "draw_text_marker", "burn_markers",
    "generate_phantoms", "shortcut_twin", "contact_sheet",
]
