"""advkit plugin: AutoAttack (Croce & Hein, ICML 2020).

Registers ``aa`` (the standard version, alias ``autoattack``), ``aa-rand``
(for randomized defenses), ``aa-plus``, and each of its attacks alone
(``apgd-ce``, ``apgd-dlr``, ``apgd-t``, ``aa.fab``, ``fab-t``, ``aa.square``).
It runs the official ``autoattack`` package when installed, else
``pyautoattack``, else torchattacks' reduced AutoAttack (labelled as not the
standard one); ``ADVKIT_AUTOATTACK`` forces a choice. Nothing is imported
until an attack is built.
"""

from __future__ import annotations

from advkit.plugin import hookimpl


@hookimpl
def advkit_register_attacks(register):
    from advkit_autoattack.factory import aa, aa_plus, aa_rand, single

    AA = ("autoattack", "pyautoattack", "torchattacks")  # the implementations, in the order they are chosen

    register("aa", aa, aliases=("autoattack", "aa-standard"), adaptive="aa-rand", default=3, library=AA, keeps_best=True)
    register("aa-rand", aa_rand, aliases=("autoattack-rand",), library=AA, keeps_best=True)
    register("aa-plus", aa_plus, aliases=("autoattack-plus",), library=AA, keeps_best=True)
    register("aa.apgd-ce", single("apgd-ce"), aliases=("apgd-ce",), library=AA, keeps_best=True)
    register("aa.apgd-dlr", single("apgd-dlr"), aliases=("apgd-dlr",), library=AA, keeps_best=True, reference="margin")
    register("aa.apgd-t", single("apgd-t"), aliases=("apgd-t",), library=AA, keeps_best=True)
    register("aa.fab", single("fab"), library=AA, keeps_best=True)
    register("aa.fab-t", single("fab-t"), aliases=("fab-t",), library=AA, keeps_best=True)
    register("aa.square", single("square"), aliases=("square-aa",), black_box=True, library=AA, keeps_best=True)
