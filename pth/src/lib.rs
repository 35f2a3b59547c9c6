//! PyTorch `.pth` state_dict files.
