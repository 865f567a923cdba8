// Host emulation (csrc/emu/cuda_emu.h) in place of the CUDA toolkit header of this name.
#pragma once
#include "emu/cuda_emu.h"
