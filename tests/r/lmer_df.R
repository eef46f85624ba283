# Reference Satterthwaite df from lmerTest for fclab's lmm: y ~ 0 + x0 + ... + (1 | subject), REML.
# Usage: Rscript lmer_df.R data.csv contrasts.csv out.csv
#   data.csv: edge, subject, y, x0..x{p-1};  contrasts.csv: one row per contrast, columns x0..x{p-1}
# out.csv: edge, contrast, df, tau2, sigma2
suppressMessages(library(lmerTest))
a <- commandArgs(TRUE)
d <- read.csv(a[1]); L <- as.matrix(read.csv(a[2]))
xs <- grep("^x[0-9]+$", names(d), value = TRUE)
form <- as.formula(paste("y ~ 0 +", paste(xs, collapse = " + "), "+ (1 | subject)"))
ctl <- lmerControl(optimizer = "bobyqa", optCtrl = list(rhobeg = 1e-3, rhoend = 1e-12, maxfun = 1e5),
                   check.conv.singular = "ignore", calc.derivs = FALSE)
rows <- list()
for (e in unique(d$edge)) {
  x <- d[d$edge == e, ]
  fit <- lmer(form, data = x, REML = TRUE, control = ctl)
  vc <- as.data.frame(VarCorr(fit))
  for (k in seq_len(nrow(L))) {
    ct <- contestMD(fit, L[k, , drop = FALSE], ddf = "Satterthwaite")
    rows[[length(rows) + 1]] <- data.frame(edge = e, contrast = k - 1, df = ct$DenDF,
                                           tau2 = vc$vcov[1], sigma2 = vc$vcov[2])
  }
}
write.csv(do.call(rbind, rows), a[3], row.names = FALSE)
