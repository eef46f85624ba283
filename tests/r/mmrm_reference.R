# Reference fits for fclab's mmrm plugin: nlme::gls (REML) and emmeans Satterthwaite contrasts.
# Usage: Rscript mmrm_reference.R data.csv out.csv STRUCTURE FORMULA CONTRASTS
#   data.csv: edge, subject, group (ref/target), window, idx (window position), value, covariates
#   STRUCTURE: us | csh | cs | ar1;  FORMULA: e.g. "value ~ group * window"
#   CONTRASTS: "interaction" (target-ref change from the first window, per later window) or
#              "group" (target-ref per window)
# out.csv: one row per edge and contrast (estimate, se, df) and per edge the fitted covariance.
suppressMessages({library(nlme); library(emmeans)})
a <- commandArgs(TRUE)
source(file.path(dirname(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE))), "satterthwaite.R"))
d <- read.csv(a[1], stringsAsFactors = FALSE)
struct <- a[3]; form <- as.formula(a[4]); what <- a[5]
d$group <- factor(d$group, levels = c("ref", "target"))
wl <- unique(d$window[order(d$idx)])
d$window <- factor(d$window, levels = wl)
d$subject <- factor(d$subject)
K <- length(wl)
rows <- list()
for (e in unique(d$edge)) {
  x <- d[d$edge == e, ]
  x <- x[order(x$subject, x$idx), ]
  cs <- switch(struct, us = corSymm(form = ~ idx | subject), csh = corCompSymm(form = ~ idx | subject),
               cs = corCompSymm(form = ~ idx | subject), ar1 = corAR1(form = ~ idx | subject))
  w <- if (struct %in% c("us", "csh")) varIdent(form = ~ 1 | window) else NULL
  ctl <- glsControl(maxIter = 1000, msMaxIter = 1000, tolerance = 1e-10, msTol = 1e-12, returnObject = TRUE)
  fit <- if (is.null(w)) eval(bquote(gls(.(form), data = x, correlation = cs, method = "REML", control = ctl))) else
    eval(bquote(gls(.(form), data = x, correlation = cs, weights = w, method = "REML", control = ctl)))
  full <- names(which(table(x$subject) == K))[1]
  V <- getVarCov(fit, individual = full)
  emm <- suppressMessages(emmeans(fit, ~ group * window, mode = "satterthwaite", data = x))
  cells <- expand.grid(group = levels(x$group), window = wl)
  L <- list()
  for (k in seq_len(K)) {
    if (what == "interaction" && k == 1) next
    v <- numeric(nrow(cells))
    v[cells$group == "target" & cells$window == wl[k]] <- 1
    v[cells$group == "ref" & cells$window == wl[k]] <- -1
    if (what == "interaction") {
      v[cells$group == "target" & cells$window == wl[1]] <- -1
      v[cells$group == "ref" & cells$window == wl[1]] <- 1
    }
    L[[as.character(wl[k])]] <- v
  }
  con <- contrast(emm, method = L, adjust = "none")
  s <- summary(con)
  exact <- gls_satterthwaite_df(fit, form, x, x$value, con@linfct)
  rows[[length(rows) + 1]] <- data.frame(edge = e, kind = "contrast", window = as.character(s$contrast),
                                         i = NA, j = NA, estimate = s$estimate, se = s$SE, df = s$df,
                                         df_exact = exact)
  ij <- which(upper.tri(V, diag = TRUE), arr.ind = TRUE)
  rows[[length(rows) + 1]] <- data.frame(edge = e, kind = "sigma", window = NA, i = ij[, 1] - 1,
                                         j = ij[, 2] - 1, estimate = V[ij], se = NA, df = NA, df_exact = NA)
}
write.csv(do.call(rbind, rows), a[2], row.names = FALSE)
