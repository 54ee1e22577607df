"""Training-like data reconstruction (section 3.4): inversion pushed toward training data.

    python reconstruct.py --dataset fmnist --subset 10000 --device cuda

The same generators and training as invert.py, with two changes, as in the paper:
hot (one-hot) conditioning vectors instead of soft ones, so the generator seeks
images the classifier is confident in, and L_Recon instead of L_Inv:

    L_Recon = alpha*L_KL + alpha'*L_KL^pert + beta*L_CE + beta'*L_CE^pert
            + gamma*L_Cosine + delta*L_Ortho + eta1*L_Var + eta2*L_Pix + eta3*L_Grad
            + eta_bn*L_BN

Deviations from the paper (README): L_BN, the batch-norm statistics term (--eta-bn 0
drops it), and the generator's sigmoid output (--output linear restores the paper's).

The grid gets a last column with a training image of each class, for comparison.
"""
import invert
import tldr

if __name__ == "__main__":
    tldr.run_script(lambda: invert.main(reconstruct=True, doc=__doc__))
