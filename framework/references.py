"""Formatted references: the ones built-in plugins declare (``Plugin.references``) and the ones the
framework's own steps need. The report lists those of what ran, in order of first use."""

NILEARN = ("Abraham A, Pedregosa F, Eickenberg M, et al. Machine learning for neuroimaging with scikit-learn. "
           "Front Neuroinform. 2014;8:14. doi:10.3389/fninf.2014.00014")
FMRIPREP = ("Esteban O, Markiewicz CJ, Blair RW, et al. fMRIPrep: a robust preprocessing pipeline for functional "
            "MRI. Nat Methods. 2019;16(1):111-116. doi:10.1038/s41592-018-0235-4")
DENOISING = ("Wang HT, Meisler SL, Sharmarke H, et al. Continuous evaluation of denoising strategies in "
             "resting-state fMRI connectivity using fMRIPrep and Nilearn. PLoS Comput Biol. 2024;20(3):e1011942. "
             "doi:10.1371/journal.pcbi.1011942")
SCRUBBING = ("Power JD, Barnes KA, Snyder AZ, Schlaggar BL, Petersen SE. Spurious but systematic correlations in "
             "functional connectivity MRI networks arise from subject motion. NeuroImage. 2012;59(3):2142-2154. "
             "doi:10.1016/j.neuroimage.2011.10.018")
DVC = "Kuprieiev R, et al. DVC: Data Version Control - Git for Data & Models. Zenodo. doi:10.5281/zenodo.3677553"
HARVARD_OXFORD = (
    "Makris N, Goldstein JM, Kennedy D, et al. Decreased volume of left and total anterior insular lobule in "
    "schizophrenia. Schizophr Res. 2006;83(2-3):155-171. doi:10.1016/j.schres.2005.11.020",
    "Frazier JA, Chiu S, Breeze JL, et al. Structural brain magnetic resonance imaging of limbic and thalamic "
    "volumes in pediatric bipolar disorder. Am J Psychiatry. 2005;162(7):1256-1265. doi:10.1176/appi.ajp.162.7.1256",
    "Desikan RS, Ségonne F, Fischl B, et al. An automated labeling system for subdividing the human cerebral cortex "
    "on MRI scans into gyral based regions of interest. NeuroImage. 2006;31(3):968-980. "
    "doi:10.1016/j.neuroimage.2006.01.021",
    "Goldstein JM, Seidman LJ, Makris N, et al. Hypothalamic abnormalities in schizophrenia: sex effects and "
    "genetic vulnerability. Biol Psychiatry. 2007;61(8):935-945. doi:10.1016/j.biopsych.2006.06.027",
)
ANDREWS_HANNA = ("Andrews-Hanna JR, Reidler JS, Sepulcre J, Poulin R, Buckner RL. Functional-anatomic fractionation "
                 "of the brain's default network. Neuron. 2010;65(4):550-562. doi:10.1016/j.neuron.2010.02.005")
FISHER_Z = ("Fisher RA. Frequency distribution of the values of the correlation coefficient in samples from an "
            "indefinitely large population. Biometrika. 1915;10(4):507-521. doi:10.2307/2331838")
SPEARMAN = ("Spearman C. The proof and measurement of association between two things. Am J Psychol. 1904;15(1):72-101. "
            "doi:10.2307/1412159")
LEDOIT_WOLF = ("Ledoit O, Wolf M. A well-conditioned estimator for large-dimensional covariance matrices. "
               "J Multivar Anal. 2004;88(2):365-411. doi:10.1016/S0047-259X(03)00096-4")
PARTIAL = ("Marrelec G, Krainik A, Duffau H, et al. Partial correlation for functional brain interactivity "
           "investigation in functional MRI. NeuroImage. 2006;32(1):228-237. doi:10.1016/j.neuroimage.2005.12.057")
TANGENT = ("Varoquaux G, Baronnet F, Kleinschmidt A, Fillard P, Thirion B. Detection of brain functional-connectivity "
           "difference in post-stroke patients using group-level covariance modeling. MICCAI 2010, LNCS 6361:200-208. "
           "doi:10.1007/978-3-642-15705-9_25")
COHERENCE = ("Sun FT, Miller LM, D'Esposito M. Measuring interregional functional connectivity using coherence and "
             "partial coherence analyses of fMRI data. NeuroImage. 2004;21(2):647-658. "
             "doi:10.1016/j.neuroimage.2003.09.056")
MTD = ("Shine JM, Koyejo O, Bell PT, Gorgolewski KJ, Gilat M, Poldrack RA. Estimation of dynamic functional "
       "connectivity using Multiplication of Temporal Derivatives. NeuroImage. 2015;122:399-407. "
       "doi:10.1016/j.neuroimage.2015.07.064")
SATTERTHWAITE = ("Satterthwaite FE. An approximate distribution of estimates of variance components. Biometrics "
                 "Bulletin. 1946;2(6):110-114. doi:10.2307/3002019")
KENWARD_ROGER = ("Kenward MG, Roger JH. Small sample inference for fixed effects from restricted maximum "
                 "likelihood. Biometrics. 1997;53(3):983-997. doi:10.2307/2533558")
LMERTEST = ("Kuznetsova A, Brockhoff PB, Christensen RHB. lmerTest package: tests in linear mixed effects models. "
            "J Stat Softw. 2017;82(13):1-26. doi:10.18637/jss.v082.i13")
MMRM = ("Mallinckrodt CH, Lane PW, Schnell D, Peng Y, Mancuso JP. Recommendations for the primary analysis of "
        "continuous endpoints in longitudinal clinical trials. Drug Inf J. 2008;42(4):303-319. "
        "doi:10.1177/009286150804200402")
WELCH = ("Welch BL. The generalization of 'Student's' problem when several different population variances are "
         "involved. Biometrika. 1947;34(1-2):28-35. doi:10.1093/biomet/34.1-2.28")
HEDGES_OLKIN = "Hedges LV, Olkin I. Statistical Methods for Meta-Analysis. Orlando: Academic Press; 1985."
MANN_WHITNEY = ("Mann HB, Whitney DR. On a test of whether one of two random variables is stochastically larger "
                "than the other. Ann Math Stat. 1947;18(1):50-60. doi:10.1214/aoms/1177730491")
ANCOVA = ("Vickers AJ, Altman DG. Analysing controlled trials with baseline and follow up measurements. BMJ. "
          "2001;323(7321):1123-1124. doi:10.1136/bmj.323.7321.1123")
WESTFALL_YOUNG = "Westfall PH, Young SS. Resampling-Based Multiple Testing. New York: Wiley; 1993."
NBS = ("Zalesky A, Fornito A, Bullmore ET. Network-based statistic: identifying differences in brain networks. "
       "NeuroImage. 2010;53(4):1197-1207. doi:10.1016/j.neuroimage.2010.06.041")
HOLM = "Holm S. A simple sequentially rejective multiple test procedure. Scand J Stat. 1979;6(2):65-70."
BENJAMINI_HOCHBERG = ("Benjamini Y, Hochberg Y. Controlling the false discovery rate: a practical and powerful "
                      "approach to multiple testing. J R Stat Soc Series B. 1995;57(1):289-300. "
                      "doi:10.1111/j.2517-6161.1995.tb02031.x")
CORRECTIONS = {"holm": (HOLM,), "fdr_bh": (BENJAMINI_HOCHBERG,), "bonferroni": ()}
