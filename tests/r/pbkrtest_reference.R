# Kenward-Roger by R pbkrtest for the random-intercept model, which is the compound-symmetry MMRM
# (Sigma = a I + b 11' with b > 0; pbkrtest's variance components are (b, a), and its covariance of
# them is from the expected information).
# Also lmerTest's Satterthwaite F (observed information) for multi-df contrasts.
# Usage: Rscript pbkrtest_reference.R data.csv contrasts.csv out.csv (the files of kr_reference.R)
# out.csv: per contrast name: c, estimate (c = 1) or F (KR-scaled), se (sqrt of l' PhiA l), df, lambda,
#   and for c > 1 lmerTest's F_sat and den_df_sat.
suppressMessages({library(lme4); library(pbkrtest); library(lmerTest)})
a <- commandArgs(TRUE)
d <- read.csv(a[1], stringsAsFactors = FALSE)
cons <- read.csv(a[2], stringsAsFactors = FALSE)
xs <- grep("^x[0-9]+$", names(d), value = TRUE)
form <- as.formula(paste("value ~ 0 +", paste(xs, collapse = " + "), "+ (1 | subject)"))
ctl <- lmerControl(optimizer = "nloptwrap", optCtrl = list(xtol_abs = 1e-14, ftol_abs = 1e-16, xtol_rel = 1e-14,
                                                         maxeval = 100000), calc.derivs = FALSE)
fit <- lmerTest::lmer(form, data = d, REML = TRUE, control = ctl)
PhiA <- as.matrix(vcovAdj(fit))
beta <- fixef(fit)
out <- list()
for (nm in unique(cons$name)) {
  L <- as.matrix(cons[cons$name == nm, xs, drop = FALSE])  # (c, p)
  if (nrow(L) == 1) {
    out[[nm]] <- data.frame(name = nm, c = 1, estimate = sum(L * beta), se = sqrt(drop(L %*% PhiA %*% t(L))),
                            df = get_Lb_ddf(fit, L), lambda = 1, F_sat = NA, den_df_sat = NA)
  } else {
    k <- KRmodcomp(fit, L)$test
    sat <- contest(fit, L, joint = TRUE, ddf = "Satterthwaite")
    out[[nm]] <- data.frame(name = nm, c = nrow(L), estimate = k["Ftest", "stat"], se = NA, df = k["Ftest", "ddf"],
                            lambda = k["Ftest", "F.scaling"], F_sat = sat[["F value"]], den_df_sat = sat[["DenDF"]])
  }
}
write.csv(do.call(rbind, out), a[3], row.names = FALSE)
