# adapt_add_test(NAME <name> SOURCES <files...> LIBS <targets...> LABELS <labels...>
#                [MPI_RANKS <n...>] [TIMEOUT <s>] [NEEDS_GPU] [ARGS <args...>])
#
# Builds one doctest executable and registers it with CTest. Every test gets a timeout. Test names
# carry their mode as a prefix: cpu.<name>, mpi<N>.<name>, gpu.<name>. MPI tests run under
# mpiexec -n N --oversubscribe (plus --allow-run-as-root when configured as root, as in containers).
# GPU tests exit with 77 after printing why when no device is visible; CTest reports them skipped.
set(ADAPT_TEST_DATA_DIR "${PROJECT_SOURCE_DIR}/tests/golden/data")
set(ADAPT_SHARED_DIR "${PROJECT_SOURCE_DIR}/../shared" CACHE PATH "The shared folder beside the checkout (test-only data such as Meta's Llama 3 tokenizer)")

set(_adapt_mpi_flags --oversubscribe)
execute_process(COMMAND id -u OUTPUT_VARIABLE _adapt_uid OUTPUT_STRIP_TRAILING_WHITESPACE)
if(_adapt_uid STREQUAL "0")
  list(APPEND _adapt_mpi_flags --allow-run-as-root)
endif()

function(adapt_add_test)
  cmake_parse_arguments(T "NEEDS_GPU" "NAME;TIMEOUT" "SOURCES;LIBS;LABELS;MPI_RANKS;ARGS" ${ARGN})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 120)
  endif()
  set(exe test_${T_NAME})
  add_executable(${exe} ${T_SOURCES})
  set_target_properties(${exe} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/tests)
  target_link_libraries(${exe} PRIVATE ${T_LIBS} doctest::doctest adapt_test_support adapt_options)
  set(env "ADAPT_TEST_DATA=${ADAPT_TEST_DATA_DIR}" "ADAPT_SOURCE_DIR=${PROJECT_SOURCE_DIR}"
          "ADAPT_BINARY_DIR=${PROJECT_BINARY_DIR}" "ADAPT_SHARED_DIR=${ADAPT_SHARED_DIR}"
          "OMP_NUM_THREADS=1")
  if(T_MPI_RANKS)
    foreach(n IN LISTS T_MPI_RANKS)
      add_test(NAME mpi${n}.${T_NAME}
               COMMAND ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} ${n} ${_adapt_mpi_flags}
                       $<TARGET_FILE:${exe}> ${T_ARGS})
      set_tests_properties(mpi${n}.${T_NAME} PROPERTIES TIMEOUT ${T_TIMEOUT} LABELS "mpi;${T_LABELS}"
                           ENVIRONMENT "${env}" PROCESSORS ${n})
    endforeach()
  else()
    if(T_NEEDS_GPU)
      set(prefix gpu)
    else()
      set(prefix cpu)
    endif()
    add_test(NAME ${prefix}.${T_NAME} COMMAND ${exe} ${T_ARGS})
    set(labels "${T_LABELS}")
    if(T_NEEDS_GPU)
      list(APPEND labels gpu)
    else()
      list(APPEND labels cpu)
    endif()
    set_tests_properties(${prefix}.${T_NAME} PROPERTIES TIMEOUT ${T_TIMEOUT} LABELS "${labels}"
                         ENVIRONMENT "${env}" SKIP_RETURN_CODE 77)
  endif()
endfunction()

# adapt_add_script_test(NAME <name> COMMAND <cmd...> LABELS <labels...> [TIMEOUT <s>])
# Registers a command (a script, an app run) as a CTest test with the same environment.
function(adapt_add_script_test)
  cmake_parse_arguments(T "" "NAME;TIMEOUT" "COMMAND;LABELS" ${ARGN})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 120)
  endif()
  add_test(NAME cpu.${T_NAME} COMMAND ${T_COMMAND} WORKING_DIRECTORY ${PROJECT_BINARY_DIR})
  set_tests_properties(cpu.${T_NAME} PROPERTIES TIMEOUT ${T_TIMEOUT} LABELS "cpu;${T_LABELS}"
    SKIP_RETURN_CODE 77
    ENVIRONMENT "ADAPT_TEST_DATA=${ADAPT_TEST_DATA_DIR};ADAPT_SOURCE_DIR=${PROJECT_SOURCE_DIR};ADAPT_BINARY_DIR=${PROJECT_BINARY_DIR};ADAPT_SHARED_DIR=${ADAPT_SHARED_DIR}")
endfunction()
