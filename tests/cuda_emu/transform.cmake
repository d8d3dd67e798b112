# Rewrites a kernels/*.cu file into C++ for cuda_emu (include/cuda_emu.h): every launch
# `k<<<grid, block, smem, stream>>>(args)` becomes `k % ::cuda_emu::Cfg(grid, block, smem, stream) %
# ::cuda_emu::pack(args)`, and `extern __shared__ T name[];` a pointer to the launch's dynamic shared
# memory. Lines keep their numbers, and a #line directive names the original file in diagnostics.
# Usage: cmake -DIN=<file.cu> -DOUT=<file.cpp> -P transform.cmake
file(READ "${IN}" src)
string(REGEX MATCHALL "<<<" opens "${src}")
string(REGEX MATCHALL ">>>" closes "${src}")
list(LENGTH opens n_open)
list(LENGTH closes n_close)
if(NOT n_open EQUAL n_close)
  message(FATAL_ERROR "${IN}: ${n_open} '<<<' but ${n_close} '>>>': cannot rewrite the kernel launches")
endif()
string(REPLACE "<<<" " % ::cuda_emu::Cfg(" src "${src}")
string(REPLACE ">>>" ") % ::cuda_emu::pack" src "${src}")
string(REGEX REPLACE "extern __shared__ (__align__\\([0-9]+\\) )?([A-Za-z_0-9 ]+) ([A-Za-z_0-9]+)\\[\\];"
       "\\2* \\3 = static_cast<\\2*>(::cuda_emu::dynamic_shared());" src "${src}")
if(src MATCHES "extern __shared__")
  message(FATAL_ERROR "${IN}: an 'extern __shared__' declaration transform.cmake does not know how to rewrite")
endif()
# nvcc includes the CUDA runtime header implicitly.
set(content "#include \"cuda_emu.h\"\n#line 1 \"${IN}\"\n${src}")
if(EXISTS "${OUT}")
  file(READ "${OUT}" old)
  if(old STREQUAL content)
    return()
  endif()
endif()
file(WRITE "${OUT}" "${content}")
