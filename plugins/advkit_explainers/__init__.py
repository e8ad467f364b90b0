"""Built-in explainers: attributions, class activation maps and robust-representation visualisations.

Attributions wrap captum: ``ig`` (IntegratedGradients), ``shap`` (GradientShap,
i.e. expected gradients) and ``gradcam`` (LayerGradCam; the ``xgradcam`` and
``layercam`` variants are computed here, captum has neither). The
representation methods of Engstrom et al. (2019) and Santurkar et al. (2019),
as used to compare standard and adversarially trained models, are implemented
here on a shared L2 PGD: ``feature-viz``, ``invert`` and ``class-gen``; ``fid``
measures generated images against real ones (FID with torch-fidelity's FID
Inception from local weights, or a Fréchet distance in another network's
features, named as such). docs/explainers.md has the details.
"""

from __future__ import annotations

from advkit.plugin import hookimpl


@hookimpl
def advkit_register_explainers(register):
    from advkit_explainers.cam import gradcam
    from advkit_explainers.classgen import class_gen
    from advkit_explainers.featureviz import feature_viz
    from advkit_explainers.fid import fid
    from advkit_explainers.ig import ig
    from advkit_explainers.invert import invert
    from advkit_explainers.shap import shap

    register("ig", ig, aliases=("integrated-gradients",), library="captum")
    register("shap", shap, aliases=("expected-gradients", "gradient-shap"), library="captum")
    register("gradcam", gradcam, aliases=("grad-cam", "cam"), library="captum")
    register("feature-viz", feature_viz, aliases=("feature-visualization", "featviz"))
    register("invert", invert, aliases=("inversion", "representation-inversion"))
    register("class-gen", class_gen, aliases=("class-generation", "classgen"))
    register("fid", fid, aliases=("frechet",), library="torch-fidelity")
