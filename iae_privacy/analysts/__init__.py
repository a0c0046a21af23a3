"""The analysts' side: read-only SQL over latent tables (:mod:`.query`), synthetic records
(:mod:`.synthesize`), the attacks that measure what a latent table gives away (:mod:`.attacks`;
for protected columns :mod:`.protection`), what else analysts could be handed with k columns
(:mod:`.baselines`: PCA-k, an autoencoder-k), the evaluation that runs them (:mod:`.evaluate`) and
its report (:mod:`.report`)."""
