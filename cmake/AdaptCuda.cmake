# ADAPT_CUDA = AUTO | ON | OFF | EMU. AUTO enables CUDA when nvcc is found; ON fails at configure time
# with the reason when it is not. EMU builds the CUDA code paths against tests/cuda_emu, a CPU emulation
# of the CUDA runtime, kernels, cuBLASLt and NCCL (between the processes of one host): a test build,
# not for use.
# Sets ADAPT_HAVE_CUDA, ADAPT_CUDA_EMU and ADAPT_HAVE_NCCL (0/1) and ADAPT_CUDA_REASON.
set(ADAPT_HAVE_CUDA OFF)
set(ADAPT_CUDA_EMU OFF)
set(ADAPT_HAVE_NCCL OFF)
set(ADAPT_CUDA_REASON "")
string(TOUPPER "${ADAPT_CUDA}" _adapt_cuda)
if(NOT _adapt_cuda MATCHES "^(AUTO|ON|OFF|EMU)$")
  message(FATAL_ERROR "ADAPT_CUDA='${ADAPT_CUDA}': use AUTO, ON, OFF or EMU")
endif()

if(_adapt_cuda STREQUAL "EMU")
  set(ADAPT_HAVE_CUDA ON)
  set(ADAPT_CUDA_EMU ON)
  set(ADAPT_CUDA_REASON ": emulated on the CPU (tests/cuda_emu), for tests only")
  set(_emu ${PROJECT_SOURCE_DIR}/tests/cuda_emu)
  add_library(adapt_cuda_emu_runtime STATIC ${_emu}/cuda_emu.cpp ${_emu}/cuda_emu_streams.cpp ${_emu}/cublaslt_emu.cpp
              ${_emu}/nccl_emu.cpp)
  target_include_directories(adapt_cuda_emu_runtime BEFORE PUBLIC ${_emu}/include)
  target_include_directories(adapt_cuda_emu_runtime PUBLIC ${PROJECT_SOURCE_DIR}/src)
  target_link_libraries(adapt_cuda_emu_runtime PUBLIC adapt_dtype)
  target_compile_definitions(adapt_cuda_emu_runtime PUBLIC ADAPT_CUDA_EMU=1)
  target_compile_options(adapt_cuda_emu_runtime PUBLIC -Wno-unknown-pragmas PRIVATE -ffp-contract=off)
  # Streams run apart from the host and from each other (CUDA_EMU_STREAMS=sync runs every call at once).
  target_compile_definitions(adapt_cuda_emu_runtime PRIVATE CUDA_EMU_DEFERRED_DEFAULT=1)
  add_library(CUDA::cudart ALIAS adapt_cuda_emu_runtime)
  add_library(CUDA::cublasLt ALIAS adapt_cuda_emu_runtime)
  add_library(CUDA::cublas ALIAS adapt_cuda_emu_runtime)
  add_library(adapt_nccl INTERFACE)
  target_link_libraries(adapt_nccl INTERFACE adapt_cuda_emu_runtime)
  set(ADAPT_HAVE_NCCL ON)
  set(ADAPT_NCCL_VERSION "emulated (tests/cuda_emu/nccl_emu.cpp)")
elseif(NOT _adapt_cuda STREQUAL "OFF")
  if(NOT CMAKE_CUDA_COMPILER AND NOT DEFINED ENV{CUDACXX})
    find_program(_adapt_nvcc nvcc HINTS /usr/local/cuda/bin ENV CUDA_HOME PATH_SUFFIXES bin)
    if(_adapt_nvcc)
      set(CMAKE_CUDA_COMPILER "${_adapt_nvcc}" CACHE FILEPATH "CUDA compiler")
    endif()
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    set(CMAKE_CUDA_ARCHITECTURES "${ADAPT_CUDA_ARCHS}")
    set(CMAKE_CUDA_STANDARD 17)
    set(CMAKE_CUDA_STANDARD_REQUIRED ON)
    enable_language(CUDA)
    find_package(CUDAToolkit REQUIRED)
    set(ADAPT_HAVE_CUDA ON)
  elseif(_adapt_cuda STREQUAL "ON")
    message(FATAL_ERROR "ADAPT_CUDA=ON but no CUDA compiler (nvcc) was found. Install the CUDA toolkit, "
                        "put nvcc on PATH (or set CUDACXX), or configure with -DADAPT_CUDA=OFF.")
  else()
    set(ADAPT_CUDA_REASON ": nvcc not found, CPU-only build")
  endif()
else()
  set(ADAPT_CUDA_REASON ": disabled by ADAPT_CUDA=OFF")
endif()

if(ADAPT_HAVE_CUDA AND NOT ADAPT_CUDA_EMU)
  find_path(ADAPT_NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS} /usr/include)
  find_library(ADAPT_NCCL_LIBRARY nccl HINTS ${CUDAToolkit_LIBRARY_DIR} /usr/lib/x86_64-linux-gnu)
  if(ADAPT_NCCL_INCLUDE_DIR AND ADAPT_NCCL_LIBRARY)
    file(STRINGS "${ADAPT_NCCL_INCLUDE_DIR}/nccl.h" _nccl_ver REGEX "^#define NCCL_(MAJOR|MINOR|PATCH) ")
    string(REGEX REPLACE ".*NCCL_MAJOR ([0-9]+).*NCCL_MINOR ([0-9]+).*NCCL_PATCH ([0-9]+).*" "\\1.\\2.\\3"
           ADAPT_NCCL_VERSION "${_nccl_ver}")
    add_library(adapt_nccl INTERFACE)
    target_include_directories(adapt_nccl INTERFACE ${ADAPT_NCCL_INCLUDE_DIR})
    target_link_libraries(adapt_nccl INTERFACE ${ADAPT_NCCL_LIBRARY})
    set(ADAPT_HAVE_NCCL ON)
  elseif(_adapt_cuda STREQUAL "ON")
    message(FATAL_ERROR "ADAPT_CUDA=ON but NCCL (nccl.h, libnccl) was not found next to the CUDA toolkit. "
                        "Install NCCL (libnccl-dev) or configure with -DADAPT_CUDA=OFF.")
  endif()
endif()

# adapt_cuda_emu_sources(<out-var> <file.cu>...): the C++ files tests/cuda_emu/transform.cmake makes of
# CUDA sources (in this folder's build tree), for the emulator.
function(adapt_cuda_emu_sources out)
  set(result "")
  foreach(cu IN LISTS ARGN)
    get_filename_component(abs ${cu} ABSOLUTE)
    get_filename_component(name ${cu} NAME_WE)
    set(cpp ${CMAKE_CURRENT_BINARY_DIR}/cuda_emu/${name}.cpp)
    add_custom_command(OUTPUT ${cpp}
                       COMMAND ${CMAKE_COMMAND} -DIN=${abs} -DOUT=${cpp}
                               -P ${PROJECT_SOURCE_DIR}/tests/cuda_emu/transform.cmake
                       DEPENDS ${abs} ${PROJECT_SOURCE_DIR}/tests/cuda_emu/transform.cmake
                       COMMENT "cuda_emu: ${name}.cu as C++")
    list(APPEND result ${cpp})
  endforeach()
  set(${out} ${result} PARENT_SCOPE)
endfunction()
