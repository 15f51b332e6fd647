# tests/gpu/parity.cmake — included by tests/gpu/CMakeLists.txt: one ctest
# gpu_parity_<case> per reference case directory under
# tests/data/golden/cases (test_gpu_parity <case dir>: vision embeddings,
# prompt logits and greedy tokens on the CUDA backend against the reference,
# bf16 tolerances). Label gpu; exit 77 (skipped) without a CUDA device.
# Only in builds with the CUDA backend.
if(VIDI_HAVE_CUDA)
  file(GLOB VIDI_GPU_GOLDEN_CASES LIST_DIRECTORIES true ${VIDI_TEST_DATA}/golden/cases/*)
  foreach(dir ${VIDI_GPU_GOLDEN_CASES})
    if(IS_DIRECTORY ${dir} AND EXISTS ${dir}/manifest.json)
      get_filename_component(case ${dir} NAME)
      if(NOT TARGET test_gpu_parity)
        add_executable(test_gpu_parity ${CMAKE_CURRENT_LIST_DIR}/test_gpu_parity.c
                       ${PROJECT_SOURCE_DIR}/tests/test_util.c)
        target_compile_options(test_gpu_parity PRIVATE ${VIDI_C_WARNINGS})
        target_include_directories(test_gpu_parity PRIVATE ${PROJECT_SOURCE_DIR}/tests)
        target_link_libraries(test_gpu_parity PRIVATE vidi_engine)
        target_compile_definitions(test_gpu_parity PRIVATE VIDI_TEST_DATA="${VIDI_TEST_DATA}")
      endif()
      add_test(NAME gpu_parity_${case} COMMAND test_gpu_parity ${dir})
      set_tests_properties(gpu_parity_${case} PROPERTIES LABELS gpu SKIP_RETURN_CODE 77
                           TIMEOUT 600)
    endif()
  endforeach()
endif()
